"""Training-loader throughput with full default augmentation on coco128-seg (imgsz 640, batch 16).

Prints JSON {images_per_s_workers0, images_per_s_workers2, imgsz, batch, ...}. Usage:
    python bench/loader_throughput.py [--data ../shared/data/coco128-seg] [--batches 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def images_per_second(dataset, batch: int, workers: int, batches: int) -> float:
    """Images per second over `batches` batches, after one warm-up batch (worker start-up excluded)."""
    from yoloseg.data.loader import build_dataloader

    loader = build_dataloader(dataset, batch, workers=workers, shuffle=True, seed=0)
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it).images)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "coco128-seg"))
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("YOLOSEG_CACHE_DIR", tempfile.mkdtemp(prefix="yoloseg-bench-"))
    if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(REPO))

    from yoloseg.data.dataset import SegmentDataset
    from yoloseg.data.dataset_yaml import check_dataset

    data = check_dataset(args.data)
    ds = SegmentDataset(data["train"], imgsz=args.imgsz, augment=True, hyp={}, nc=data["nc"], batch_size=args.batch)
    result = {f"images_per_s_workers{w}": round(images_per_second(ds, args.batch, w, args.batches), 2) for w in (0, 2)}
    result.update(imgsz=args.imgsz, batch=args.batch, images=len(ds), cpus=os.cpu_count(), data=Path(args.data).name)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
