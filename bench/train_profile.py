"""Where a CPU training epoch spends its time, per operator (torch.profiler over one whole epoch): prints JSON.

The shapes recipe (yolo11n-seg from YAML on shapes-ref-seg, imgsz 256, batch 16, amp=False as the incumbent's recipe,
or --amp bf16), its first epoch without validation; the profiler covers the epoch from its first batch to its last
optimizer step. Reports the epoch's seconds, the operators with the most self CPU time, and the convolution shapes
whose forward or backward cost most (the backward of a convolution computes the input and weight gradients).
    python bench/train_profile.py [--threads 2] [--amp bf16] [--data D.yaml] [--imgsz 256]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (the subject), or a GPU such as 0")
    parser.add_argument("--amp", default="False", help="False (fp32, the recipe) or bf16 (CPU bf16 autocast)")
    parser.add_argument("--data", default=str(SHARED / "data" / "shapes-ref-seg" / "data.yaml"))
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("YOLOSEG_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    from yoloseg import YOLO

    model = YOLO("yolo11n-seg.yaml")
    state: dict = {}

    def start(_trainer) -> None:
        state["prof"] = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
        state["prof"].__enter__()
        state["t"] = time.perf_counter()

    def stop(_trainer) -> None:
        if "prof" in state:
            state["seconds"] = time.perf_counter() - state.pop("t")
            state["prof"].__exit__(None, None, None)
            state["done"] = state.pop("prof")

    model.add_callback("on_train_epoch_start", start)
    model.add_callback("on_train_epoch_end", stop)
    amp = "bf16" if args.amp.lower() == "bf16" else False
    # time=: stop after the first epoch (hours); val=False: the epoch alone
    model.train(
        data=args.data, device=args.device, epochs=80, imgsz=args.imgsz, batch=16, seed=0, amp=amp, workers=2, val=False, plots=False,
        project=tempfile.mkdtemp(prefix="bench-train-"), time=1e-4, verbose=False,
    )  # fmt: skip
    prof = state["done"]
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    convs = [
        e
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key in ("aten::convolution_backward", "aten::mkldnn_convolution", "aten::_convolution")
    ]
    convs.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    print(json.dumps({
        "bench": "train_profile", "data": Path(args.data).parent.name, "imgsz": args.imgsz, "batch": 16,
        "amp": str(amp), "device": args.device, "threads": torch.get_num_threads(), "epoch_s": round(state["seconds"], 2),
        "self_cpu_s_total": round(total / 1e6, 2),
        "top_ops": [
            {"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "share": round(e.self_cpu_time_total / total, 3),
             "calls": e.count}
            for e in ops[: args.top]
        ],
        "top_conv_shapes": [
            {"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count,
             "shapes": str(e.input_shapes)[:120]}
            for e in convs[: args.top]
        ],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
