"""Where a CPU forward pass of yolo11n-seg spends its time, per operator (torch.profiler): prints JSON.

The inference copy the predictor runs (BN fused, channels-last), batch 1 at 640x480 (bus.jpg's letterbox), in fp32 and,
on a CPU with bf16 hardware, under the bf16 autocast of half=True. Shows what is left besides the convolutions.
    python bench/forward_profile.py [--threads N] [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def profile_forward(forward, x: torch.Tensor, runs: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):
            forward(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            forward(x)
            times.append((time.perf_counter() - t) * 1e3)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                forward(x)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return {
        "forward_ms_median": round(statistics.median(times), 2),
        "top_ops_share": {e.key: round(e.self_cpu_time_total / total, 3) for e in ops[:12]},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from yoloseg.engine.inference import CompiledForward, cpu_bf16_supported, inference_copy
    from yoloseg.nn.graph import YOLOModel

    torch.manual_seed(0)
    model = inference_copy(YOLOModel("yolo11n-seg.yaml"), torch.device("cpu"))
    x = torch.rand(1, 3, 480, 640).contiguous(memory_format=torch.channels_last)
    report = {"threads": torch.get_num_threads(), "input": list(x.shape)}
    report["fp32"] = profile_forward(CompiledForward(model), x, args.runs)
    if cpu_bf16_supported():
        report["bf16_autocast"] = profile_forward(CompiledForward(model, bf16=True), x, args.runs)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
