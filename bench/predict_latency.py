"""Prediction latency on CPU (or a GPU with --device): prints JSON.

End-to-end = one `Predictor.predict(path)` call (read, letterbox, forward, NMS, masks) plus reading `masks.xy`,
the median of --runs calls after 3 warm-ups, per image; with the per-stage medians from `Results.speed`. Also
times `masks.xy` for a synthetic image with 50 objects (the dense-scene cost of polygon extraction).

    python bench/predict_latency.py [--threads N] [--runs 20] [--imgsz 640] [--out file.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


def load_reference_model(weights: Path):
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.nn.official import load_official_checkpoint

    ckpt = load_official_checkpoint(weights)
    model = YOLOModel(ckpt["yaml"])
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    model.names = ckpt["names"]
    return model.eval().fuse()


def time_image(predictor, path: str, runs: int, warmup: int = 3) -> dict:
    """Median end-to-end and per-stage ms for one image."""
    totals, stages, xy_ms = [], {"preprocess": [], "inference": [], "postprocess": []}, []
    n_det = 0
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        (r,) = predictor.predict(path)
        t1 = time.perf_counter()
        polys = r.masks.xy if r.masks is not None else []
        t2 = time.perf_counter()
        if i >= warmup:
            totals.append((t2 - t0) * 1e3)
            xy_ms.append((t2 - t1) * 1e3)
            for k in stages:
                stages[k].append(r.speed[k])
            n_det = len(polys)
    med = statistics.median
    return {
        "end_to_end_ms": round(med(totals), 2),
        "preprocess_ms": round(med(stages["preprocess"]), 2),
        "inference_ms": round(med(stages["inference"]), 2),
        "postprocess_ms": round(med(stages["postprocess"]), 2),
        "masks_xy_ms": round(med(xy_ms), 3),
        "detections": n_det,
        "input_shape": None,
    }


def synthetic_masks(n: int = 50, frame=(640, 480), seed: int = 0) -> torch.Tensor:
    """(n, H, W) uint8 masks of random filled ellipses, some touching the border, some with holes."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = frame
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(8, w // 5)), int(rng.integers(8, h // 5)))
        cv2.ellipse(masks[i], c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if i % 5 == 0:  # a hole
            cv2.circle(masks[i], c, max(min(axes) // 3, 2), 0, -1)
    return torch.from_numpy(masks)


def time_masks_xy(n: int = 50, runs: int = 20, orig_shape=(1080, 810)) -> float:
    from yoloseg.results import Masks

    data = synthetic_masks(n)
    _ = Masks(data, orig_shape).xy  # warm-up
    times = []
    for _ in range(runs):
        m = Masks(data, orig_shape)  # fresh object: no cached polygons
        t0 = time.perf_counter()
        _ = m.xy
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "reference" / "yolo11n-seg-coco128.pt")
    ap.add_argument(
        "--images", type=Path, nargs="+", default=[SHARED / "data/images/bus.jpg", SHARED / "data/images/zidane.jpg"]
    )
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    a = ap.parse_args(argv)

    torch.set_num_threads(a.threads)
    from yoloseg.engine.predictor import Predictor

    model = load_reference_model(a.weights)
    predictor = Predictor(model, {"imgsz": a.imgsz, "verbose": False, "device": a.device})
    images = {}
    for p in a.images:
        stats = time_image(predictor, str(p), a.runs)
        (r,) = predictor.predict(str(p))
        stats["input_shape"] = [1, 3, *predictor.preprocess([r.orig_img]).shape[2:]]
        images[p.name] = stats
    report = {
        "benchmark": "predict_latency",
        "weights": a.weights.name,
        "imgsz": a.imgsz,
        "device": str(predictor.device),
        "threads": torch.get_num_threads(),
        "runs": a.runs,
        "warmup": 3,
        "images": images,
        "masks_xy_50_objects_ms": time_masks_xy(50, a.runs),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        from yoloseg.utils.files import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
