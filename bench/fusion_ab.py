"""Conv + SiLU fusion on a CPU (inference.fuse_conv_silu), fused against unfused in one process: prints JSON.

Always on the CPU, also on a machine with a GPU (which YOLO would pick by default).

Two predictors of the same checkpoint, one with its Conv blocks fused, one without, called in turn on the same image
(the order alternating each round), so a noisy machine's drift falls on both alike; in fp32, and under bf16
(`half=True`) on a CPU with bf16 hardware. Reports median end to end and inference ms per image, in how many rounds
the fused one was faster, the largest box difference between the two, and (with --data) the validation mAPs of each
(mAPs only: one cold run each is no timing).
    python bench/fusion_ab.py [--rounds 60] [--threads 2] [--data shapes-ref-seg/data.yaml --val-weights W.pt]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


@contextlib.contextmanager
def fusion(enabled: bool):
    """Predictors and validators made inside build their forward with (or without) the fusion."""
    import yoloseg.engine.inference as inference

    real = inference.fuse_conv_silu
    if not enabled:
        inference.fuse_conv_silu = lambda model, shape: []
    try:
        yield
    finally:
        inference.fuse_conv_silu = real


def predict_ab(weights: str, image: str, imgsz: int, rounds: int, half: bool) -> dict:
    from yoloseg import YOLO

    models = {"fused": YOLO(weights), "unfused": YOLO(weights)}
    for name, m in models.items():
        with fusion(name == "fused"):  # the predictor (and its forward) is made at the first call
            m(image, half=half, imgsz=imgsz, device="cpu", verbose=False)
    for _ in range(5):  # past the graph's tracing
        for m in models.values():
            m(image, half=half, imgsz=imgsz, device="cpu", verbose=False)
    ms = {k: [] for k in models}
    inference_ms = {k: [] for k in models}
    last = {}
    for r in range(rounds):
        for name in list(models)[:: 1 if r % 2 == 0 else -1]:
            t = time.perf_counter()
            res = models[name](image, half=half, imgsz=imgsz, device="cpu", verbose=False)[0]
            _ = res.masks.xy if res.masks is not None else None
            ms[name].append((time.perf_counter() - t) * 1e3)
            inference_ms[name].append(res.speed["inference"])
            last[name] = res
    a, b = last["fused"].boxes.data, last["unfused"].boxes.data
    return {
        "image": Path(image).name,
        "precision": "bf16" if half else "fp32",
        "fused_blocks": len(models["fused"].predictor.forward.packed),
        "graphs": [m.predictor.forward.graph is not None for m in models.values()],
        "end_to_end_ms": {k: round(statistics.median(v), 2) for k, v in ms.items()},
        "inference_ms": {k: round(statistics.median(v), 2) for k, v in inference_ms.items()},
        "fused_faster_rounds": sum(x < y for x, y in zip(ms["fused"], ms["unfused"])),
        "rounds": rounds,
        "detections": [len(a), len(b)],
        "max_box_difference": round(float((a - b).abs().max()), 4) if a.shape == b.shape and len(a) else None,
    }


def val_ab(weights: str, data: str, imgsz: int, half: bool) -> dict:
    from yoloseg import YOLO

    out = {}
    for name in ("fused", "unfused"):
        with fusion(name == "fused"):  # accuracy only: one cold run each would not compare as timings
            m = YOLO(weights).val(data=data, imgsz=imgsz, batch=16, half=half, device="cpu", verbose=False, plots=False)
        out[name] = {
            "box_map50": round(m.box.map50, 5),
            "box_map50_95": round(m.box.map, 5),
            "mask_map50": round(m.seg.map50, 5),
            "mask_map50_95": round(m.seg.map, 5),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from yoloseg.engine.inference import cpu_bf16_supported

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(SHARED / "reference" / "yolo11n-seg-coco128.pt"))
    parser.add_argument(
        "--images", nargs="+", default=[str(SHARED / "data" / "images" / n) for n in ("bus.jpg", "zidane.jpg")]
    )
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="also validate each (e.g. shapes-ref-seg/data.yaml)")
    parser.add_argument("--val-weights", default=str(SHARED / "reference" / "yolo11n-seg-shapes.pt"))
    parser.add_argument("--val-imgsz", type=int, default=256)
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    precisions = [False, True] if cpu_bf16_supported() else [False]  # half=True runs fp32 without bf16 hardware
    report = {
        "bench": "Conv+SiLU fusion, fused against unfused, interleaved",
        "threads": a.threads,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "predict": [predict_ab(a.weights, image, a.imgsz, a.rounds, half) for half in precisions for image in a.images],
    }
    if a.data:
        report["val"] = {
            "bf16" if half else "fp32": val_ab(a.val_weights, a.data, a.val_imgsz, half) for half in precisions
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
