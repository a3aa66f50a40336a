"""The compute floor: measured fp32 matmul / conv throughput of this CPU, and what it implies for yolo11n-seg.

Prints JSON {cpu, matmul_gflops, conv3x3_gflops, model_gflops_640, floor_ms_640, and the bf16 rates and floor on a CPU
with bf16 hardware}: the floor is GFLOPs / peak, the time a forward pass would take at the measured peak (the distance
from it shows how much each backend leaves on the table).
    python bench/compute_floor.py [--threads N]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def rate(fn, flops: float, reps: int = 20) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return flops * reps / (time.perf_counter() - t) / 1e9


def peak_rates(dtype: torch.dtype) -> tuple[float, float]:
    """GFLOP/s of a 1024² matmul and a 64->64 3x3 conv on an 80x80 map (channels-last, as inference runs) in dtype."""
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x = torch.randn(1, 64, 80, 80, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval().to(dtype=dtype, memory_format=torch.channels_last)
    with torch.inference_mode():
        return rate(lambda: a @ b, 2 * n**3), rate(lambda: conv(x), 2 * 64 * 64 * 9 * 80 * 80)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from yoloseg.engine.inference import cpu_bf16_supported
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.nn.info import count_flops
    from yoloseg.utils.torch_utils import cpu_name

    matmul, conv_rate = peak_rates(torch.float32)
    gflops = count_flops(YOLOModel("yolo11n-seg.yaml").eval().fuse(), 640)
    peak = max(matmul, conv_rate)
    report = {
        "cpu": cpu_name(), "bf16_hardware": cpu_bf16_supported(), "threads": torch.get_num_threads(),
        "matmul_gflops": round(matmul, 1), "conv3x3_gflops": round(conv_rate, 1),
        "model_gflops_640": round(gflops, 2), "floor_ms_640": round(gflops / peak * 1e3, 2),
    }  # fmt: skip
    if cpu_bf16_supported():
        matmul16, conv16 = peak_rates(torch.bfloat16)
        report |= {
            "bf16_matmul_gflops": round(matmul16, 1), "bf16_conv3x3_gflops": round(conv16, 1),
            "bf16_floor_ms_640": round(gflops / max(matmul16, conv16) * 1e3, 2),
        }  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
