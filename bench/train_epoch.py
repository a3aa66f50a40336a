"""Seconds per training epoch (train + val) for yolo11n-seg on coco128-seg (data_all128.yaml: 128 images for train
and val), imgsz 320, batch 16, as in ../shared/reference/reference-train.md (incumbent: 25.2 s, 1 thread): JSON.

The run is the incumbent's 150-epoch schedule, stopped after --epochs epochs: mosaic is on, as in all but the last 10
epochs of a real run (a 3-epoch schedule would close mosaic from the start and time cheaper epochs).
    python bench/train_epoch.py [--epochs 3] [--threads N] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for bench.common
from bench.common import SHARED, add_keep_freed_memory, setup_process  # noqa: E402

INCUMBENT_S = 25.2
SCHEDULE = 150  # epochs of the incumbent's coco128 run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (the benchmark's subject), or a GPU such as 0")
    parser.add_argument("--workers", type=int, default=2)
    add_keep_freed_memory(parser)
    args = parser.parse_args()
    setup_process(args.keep_freed_memory, args.threads)
    import torch

    from yoloseg import YOLO
    from yoloseg.utils.memory import malloc_status

    project = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = YOLO("yolo11n-seg.yaml")

    def stop(trainer) -> None:
        trainer.stop = trainer.stop or trainer.epoch + 1 >= args.epochs

    model.add_callback("on_fit_epoch_end", stop)
    model.train(
        data=str(SHARED / "data" / "coco128-seg" / "data_all128.yaml"), epochs=SCHEDULE, imgsz=320, batch=16,
        seed=0, amp=False, workers=args.workers, device=args.device, project=str(project), name="run", plots=False,
    )  # fmt: skip
    with open(project / "run" / "results.csv", newline="") as f:
        stamps = [float(r["time"]) for r in csv.DictReader(f)]
    per_epoch = [b - a for a, b in zip([0.0, *stamps[:-1]], stamps)]
    median = statistics.median(per_epoch[1:] or per_epoch)  # the first epoch includes label scanning
    print(json.dumps({
        "bench": "train coco128-seg imgsz320 batch16", "threads": torch.get_num_threads(), "device": args.device, "malloc": malloc_status(),
        "workers": args.workers,
        "seconds_per_epoch": [round(t, 2) for t in per_epoch], "seconds_per_epoch_median": round(median, 2),
        "incumbent_seconds_1thread": INCUMBENT_S, "ratio": round(median / INCUMBENT_S, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
