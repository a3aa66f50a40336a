"""The compute floor: measured fp32 matmul / conv throughput of this CPU, and what it implies for yolo11n-seg.

Prints JSON {matmul_gflops, conv_gflops, model_gflops_640, floor_ms_640}: the floor is GFLOPs / peak, the time a
forward pass would take at the measured peak (the distance from it shows how much each backend leaves on the table).
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.nn.info import count_flops

    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        matmul = rate(lambda: a @ b, 2 * n**3)
        x = torch.randn(1, 64, 80, 80)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
        conv_rate = rate(lambda: conv(x), 2 * 64 * 64 * 9 * 80 * 80)
    gflops = count_flops(YOLOModel("yolo11n-seg.yaml").eval().fuse(), 640)
    peak = max(matmul, conv_rate)
    print(json.dumps({
        "threads": torch.get_num_threads(), "matmul_gflops": round(matmul, 1), "conv3x3_gflops": round(conv_rate, 1),
        "model_gflops_640": round(gflops, 2), "floor_ms_640": round(gflops / peak * 1e3, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
