"""Validation wall time on coco128-seg (all 128 images, data_all128.yaml), imgsz 640, batch 16: prints JSON.

The incumbent takes 18.0 s here with its default single thread (../shared/reference/reference-train.md).
    python bench/val_time.py [--threads N] [--runs 3] [--imgsz 640]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
INCUMBENT_S = 18.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("YOLOSEG_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    from yoloseg import YOLO

    model = YOLO(str(SHARED / "reference" / "yolo11n-seg-coco128.pt"))
    data = str(SHARED / "data" / "coco128-seg" / "data_all128.yaml")
    project = tempfile.mkdtemp(prefix="bench-val-")
    times, m = [], None
    for _ in range(args.runs):
        t = time.perf_counter()
        m = model.val(data=data, imgsz=args.imgsz, batch=16, plots=False, verbose=False, project=project)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "bench": "val coco128-seg 128 images", "imgsz": args.imgsz, "batch": 16, "threads": torch.get_num_threads(),
        "seconds_median": round(median, 2), "seconds_all": [round(t, 2) for t in times],
        "incumbent_seconds_1thread": INCUMBENT_S, "ratio": round(median / INCUMBENT_S, 3),
        "mask_map50_95": round(m.seg.map, 5), "speed_ms_per_image": {k: round(v, 2) for k, v in m.speed.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
