"""Validation wall time (default: coco128-seg, all 128 images via data_all128.yaml, imgsz 640, batch 16): prints JSON
with the mAPs, so that --half (bf16 autocast on a CPU with bf16 hardware) shows its accuracy impact too.

The incumbent takes 18.0 s on coco128 with its default single thread (../shared/reference/reference-train.md).
    python bench/val_time.py [--threads N] [--runs 3] [--imgsz 640] [--half] [--weights W.pt] [--data D.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for bench.common
from bench.common import SHARED, add_keep_freed_memory, setup_process  # noqa: E402

INCUMBENT_S = 18.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (the benchmark's subject), or a GPU such as 0")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--weights", default=str(SHARED / "reference" / "yolo11n-seg-coco128.pt"))
    parser.add_argument("--data", default=str(SHARED / "data" / "coco128-seg" / "data_all128.yaml"))
    parser.add_argument("--half", action="store_true", help="half=True: bf16 autocast on a CPU with bf16 hardware")
    add_keep_freed_memory(parser)
    args = parser.parse_args()
    setup_process(args.keep_freed_memory, args.threads)
    import torch

    from yoloseg import YOLO
    from yoloseg.utils.memory import malloc_status

    model, data = YOLO(args.weights), args.data
    project = tempfile.mkdtemp(prefix="bench-val-")
    times, m = [], None
    for _ in range(args.runs):
        t = time.perf_counter()
        m = model.val(
            data=data,
            imgsz=args.imgsz,
            batch=16,
            half=args.half,
            device=args.device,
            plots=False,
            verbose=False,
            project=project,
        )
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "bench": f"val {Path(data).parent.name}", "weights": Path(args.weights).name, "imgsz": args.imgsz,
        "batch": 16, "threads": torch.get_num_threads(), "device": args.device, "malloc": malloc_status(),
        "seconds_median": round(median, 2), "seconds_all": [round(t, 2) for t in times],
        "incumbent_seconds_1thread": INCUMBENT_S, "ratio": round(median / INCUMBENT_S, 3),
        "half": args.half, "box_map50": round(m.box.map50, 5), "box_map50_95": round(m.box.map, 5),
        "mask_map50": round(m.seg.map50, 5), "mask_map50_95": round(m.seg.map, 5), "speed_ms_per_image": {k: round(v, 2) for k, v in m.speed.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
