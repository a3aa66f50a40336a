"""Prediction latency on CPU (or a GPU with --device): prints JSON.

End-to-end = one `Predictor.predict(path)` call (read, letterbox, forward, NMS, masks) plus reading `masks.xy`,
the median of --runs calls after 3 warm-ups, per image; with the per-stage medians from `Results.speed`. Also
times `masks.xy` for a synthetic image with 50 objects (the dense-scene cost of polygon extraction).

Each model runs on each backend: PyTorch (the default, which runs a TorchScript graph from the third call on;
`pytorch_eager` with jit=False; torch.compile'd; half=True: bf16 autocast on a CPU with AMX / AVX512-BF16), ONNX
Runtime and OpenVINO (static 640x640 fp32 exports, as the incumbent's figures; `openvino` runs them in fp32,
`openvino_auto` lets OpenVINO pick, which is bf16 on AMX as in the incumbent's OpenVINO figure); plus throughput
over the coco128 images at batch 1 and 8 and peak memory. A static OpenVINO export of yoloseg runs bus.jpg
at 640x480 like PyTorch (it is reshapeable); the `_square` rows pad it to 640x640 as the incumbent's static export
runs, the `_dynamic` rows use dynamic=True exports (see BACKENDS).

    python bench/predict_latency.py [--threads N] [--runs 20] [--backends pytorch onnx ...] [--out file.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for bench.common
from bench.common import SHARED, add_keep_freed_memory, emit, setup_process  # noqa: E402


def load_reference_model(weights: Path):
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.nn.official import load_official_checkpoint

    ckpt = load_official_checkpoint(weights)
    model = YOLOModel(ckpt["yaml"])
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    model.names = ckpt["names"]
    return model.eval()  # the predictor fuses its own copy; exports start from this unfused model


def time_image(predict, path: str, runs: int, warmup: int = 3) -> dict:
    """Median end-to-end and per-stage ms for one image; `predict(path)` returns a list with one Results."""
    totals, stages, xy_ms = [], {"preprocess": [], "inference": [], "postprocess": []}, []
    n_det = 0
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        (r,) = predict(path)
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
    }


def throughput(model, files: list[str], batch: int, device: str) -> float:
    """Images per second predicting `files` (PyTorch, imgsz 640, masks.xy read) in batches of `batch` on `device`."""
    from yoloseg.engine.predictor import Predictor

    predictor = Predictor(model, {"imgsz": 640, "verbose": False, "batch": batch, "device": device})
    for _ in predictor.predict(files[: 2 * batch], stream=True):  # warm-up
        pass
    t0 = time.perf_counter()
    for r in predictor.predict(files, stream=True):
        _ = r.masks.xy if r.masks is not None else None
    return round(len(files) / (time.perf_counter() - t0), 2)


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (MB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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


# `_dynamic`: exported with dynamic=True, so the predictor letterboxes to the image's own stride-multiple shape
# (bus.jpg: 640x480) as PyTorch does, instead of the static export's 640x640 square. yoloseg's static OpenVINO
# export does that too (it is reshapeable); `_square` runs it padded to 640x640 instead, as the incumbent's does.
BACKENDS = [
    "pytorch", "pytorch_eager", "pytorch_compile", "pytorch_bf16", "pytorch_bf16_eager", "onnx", "onnx_dynamic",
    "openvino", "openvino_auto", "openvino_square", "openvino_auto_square", "openvino_dynamic", "openvino_auto_dynamic", "torchscript",
]  # fmt: skip
INCUMBENT_2THREADS = {"pytorch": 50.0, "onnx": 63.5, "openvino": 30.4}  # bus.jpg end-to-end ms, reference-train.md


@functools.cache
def exported(model, fmt: str, imgsz: int, workdir: Path, dynamic: bool = False) -> str:
    """The file (or folder) of `model` exported to `fmt` (fp32; static imgsz x imgsz as the incumbent's figures, or
    dynamic); exported once per model, format and shape mode (`openvino` and `openvino_auto` run the same export)."""
    from yoloseg import YOLO

    # dynamic exports get their own folder: an export's file name does not say static or dynamic
    weights = workdir / ("dynamic" if dynamic else "") / "model.pt"
    if not weights.exists():
        from yoloseg.engine.saving import make_checkpoint
        from yoloseg.nn.checkpoint import save_checkpoint

        weights.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(weights, make_checkpoint(model))
    return YOLO(str(weights)).export(format=fmt, imgsz=imgsz, device="cpu", dynamic=dynamic)


def bench_model(model, label: str, images: list[Path], a, workdir: Path) -> dict:
    """Per backend, per image latency of one model."""
    from yoloseg import YOLO
    from yoloseg.engine.predictor import Predictor

    out: dict = {}
    for backend in a.backends:
        try:
            if backend.startswith("pytorch"):
                args = {"imgsz": a.imgsz, "verbose": False, "device": a.device}
                extra = {
                    "pytorch_eager": {"jit": False},
                    "pytorch_compile": {"compile": True},
                    "pytorch_bf16": {"half": True},
                    "pytorch_bf16_eager": {"half": True, "jit": False},
                }
                extra = extra.get(backend, {})
                predictor = Predictor(model, {**args, **extra})
                predict = predictor.predict
            elif backend.startswith("openvino"):
                from yoloseg.export.backends import load_backend

                path = exported(model, "openvino", a.imgsz, workdir / label, dynamic=backend.endswith("_dynamic"))
                runner = load_backend(path, ov_precision="auto" if "_auto" in backend else "fp32")
                if backend.endswith("_square"):  # as the incumbent runs a static export: padded to 640x640
                    runner.reshapeable = False
                predict = Predictor(runner, {"imgsz": a.imgsz, "verbose": False}).predict
            else:
                fmt = backend.removesuffix("_dynamic")
                yolo = YOLO(exported(model, fmt, a.imgsz, workdir / label, dynamic=backend.endswith("_dynamic")))
                predict = functools.partial(yolo.predict, imgsz=a.imgsz, verbose=False)
            out[backend] = {p.name: time_image(predict, str(p), a.runs) for p in images}
            if backend.startswith("pytorch"):  # whether the rows ran the TorchScript graph (or fell back to eager)
                out[backend]["graph"] = getattr(predictor.forward, "graph", None) is not None
        except Exception as e:  # a missing package or a failed export is reported, not fatal
            out[backend] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(label, backend, json.dumps(out[backend]), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "reference" / "yolo11n-seg-coco128.pt")
    ap.add_argument(
        "--extra-models", nargs="*", default=["yolo11s-seg.yaml"], help="more models, from YAML (random weights)"
    )
    ap.add_argument(
        "--images", type=Path, nargs="+", default=[SHARED / "data/images/bus.jpg", SHARED / "data/images/zidane.jpg"]
    )
    ap.add_argument(
        "--backends", nargs="+", choices=BACKENDS,
        default=["pytorch", "pytorch_eager", "pytorch_compile", "onnx", "openvino", "openvino_square"],
    )  # fmt: skip
    ap.add_argument("--throughput-images", type=Path, default=SHARED / "data/coco128-seg/images")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    add_keep_freed_memory(ap)
    a = ap.parse_args(argv)

    setup_process(a.keep_freed_memory, a.threads)
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.utils.memory import malloc_status

    workdir = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    models = {a.weights.name: load_reference_model(a.weights)}
    for cfg in a.extra_models:
        torch.manual_seed(0)
        models[f"{Path(cfg).stem} (random weights)"] = YOLOModel(cfg).eval()
    results = {label: bench_model(m, Path(label).stem.split()[0], a.images, a, workdir) for label, m in models.items()}
    files = sorted(str(p) for p in a.throughput_images.rglob("*.jpg"))
    primary = models[a.weights.name]
    report = {
        "benchmark": "predict_latency",
        "imgsz": a.imgsz,
        "device": a.device,
        "threads": torch.get_num_threads(),
        "malloc": malloc_status(),
        "runs": a.runs,
        "warmup": 3,
        "note": "PyTorch and yoloseg's (reshapeable) static OpenVINO export predict at a rectangular letterbox "
        "(bus.jpg 640x480); the ONNX and `_square` rows at the static 640x640, `_dynamic` rows from dynamic exports",
        "models": results,
        "throughput_img_per_s": {
            "images": len(files),
            "batch1": throughput(primary, files, 1, a.device) if files else None,
            "batch8": throughput(primary, files, 8, a.device) if files else None,
        },
        "masks_xy_50_objects_ms": time_masks_xy(50, a.runs),
        "peak_rss_mb": peak_rss_mb(),
        "incumbent_bus_end_to_end_ms_2threads": INCUMBENT_2THREADS,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    ours = results[a.weights.name]
    bus = a.images[0].name
    report["ratios_bus_vs_incumbent"] = {
        b: round(ours[b][bus]["end_to_end_ms"] / INCUMBENT_2THREADS[b.split("_")[0]], 3)
        for b in ours
        if bus in ours[b] and b.split("_")[0] in INCUMBENT_2THREADS
    }
    # like for like: the incumbent's figures are PyTorch (rect) and static 640x640 exports; dynamic exports (rect
    # inputs, ~25% fewer pixels on bus.jpg) are reported on their own, as the incumbent was not timed with them
    for key, ratio_key, dynamic in (
        ("best_backend", "best_vs_incumbent_best", False),
        ("best_dynamic_export", "best_dynamic_export_vs_incumbent_best", True),
    ):
        times = [
            (v[bus]["end_to_end_ms"], b) for b, v in ours.items() if bus in v and b.endswith("_dynamic") == dynamic
        ]
        if times:
            best = min(times)
            report[key] = {"backend": best[1], "bus_end_to_end_ms": best[0]}
            report[ratio_key] = round(best[0] / min(INCUMBENT_2THREADS.values()), 3)
    emit(report, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
