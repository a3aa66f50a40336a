"""The incumbent's prediction pipelines timed on this machine, round by round beside yoloseg's: prints JSON.

The issue's targets compare against the incumbent on the same machine, but the incumbent cannot be installed here
and its figures (reference-train.md) come from another machine (an AMX Xeon with about twice this CPU's fp32 peak).
This script rebuilds the incumbent's two timed predict paths from yoloseg's parts, step for step as INCUMBENT.md
(§1.6, §5.3-§5.7) and reference-train.md describe them, and times them here:

- read: `cv2.imdecode` of the file;
- preprocess (§5.3): letterbox to 640 (rectangular, `auto`, for the `.pt` model; the static export's 640x640 for
  OpenVINO), BGR->RGB, HWC->CHW, a contiguous copy, float / 255;
- inference: PyTorch: the BatchNorm-fused fp32 model in NCHW memory (`channels_last` is off by default), eager,
  under `torch.inference_mode`, the whole head; OpenVINO: the static 640x640 fp32 IR compiled with the device's
  default precision (bf16 on a CPU with bf16 hardware, as on the incumbent's AMX machine) and the LATENCY hint
  (`load_backend(ov_precision="auto")`, not reshaped);
- postprocess (§5.4-§5.6): NMS (single label, conf 0.25, iou 0.7), mask logits = coefficients @ prototypes for every
  kept detection, bilinear upsample of all of them to the input size, > 0, crop with the input-pixel boxes, drop
  empty masks, boxes to the original image;
- masks.xy (§5.7): contours of the input-size masks mapped to the original image.

Each round runs every pipeline once on the same image, in turn, so a ratio comes from the same minutes of a noisy
machine. A check first asserts that the rebuilt PyTorch pipeline finds the boxes yoloseg's predictor finds (it does
the same job), and reports how far the polygons differ.

With --val-pairs N, validation too: coco128-seg (128 images) at 640, batch 16, in rectangular batches, N times each
way in turn: yoloseg's `val()` against yoloseg's validator driving the incumbent's forward (the fused fp32 NCHW eager
model, whole head, each batch of 16 in one call). The rest of that proxy (loading, NMS, masks, matching, metrics) is
yoloseg's, so it is a lower bound of the incumbent's time; both must give the same mAPs.

    python bench/incumbent_config.py [--rounds 30] [--threads 2] [--keep-freed-memory] [--val-pairs 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for bench.common
from bench.common import SHARED, add_keep_freed_memory, emit, setup_process  # noqa: E402

INCUMBENT_2THREADS = {"pytorch": 50.0, "openvino": 30.4}  # bus.jpg end-to-end ms on its machine, reference-train.md
INCUMBENT_VAL_S = 18.0  # coco128-seg val at 640, its default single thread, on its machine (reference-train.md)


class IncumbentPipeline:
    """The incumbent's predict path (see the module docstring) around `forward`: (1, 3, H, W) float -> (y, protos)."""

    def __init__(self, forward, names: dict, shape: int | tuple[int, int], auto: bool, stride: int = 32):
        self.forward, self.names, self.shape, self.auto, self.stride = forward, names, shape, auto, stride

    def preprocess(self, img):
        import numpy as np
        import torch

        from yoloseg.data.augment.letterbox import letterbox

        lb, _, _ = letterbox(img, self.shape, auto=self.auto, stride=self.stride)
        x = np.ascontiguousarray(lb[None, ..., ::-1].transpose(0, 3, 1, 2))  # BGR->RGB, BHWC->BCHW
        return torch.from_numpy(x).float() / 255

    def postprocess(self, y, protos, x_shape, img, path: str):
        import torch
        import torch.nn.functional as F

        from yoloseg.ops.boxes import scale_boxes
        from yoloseg.ops.masks import crop_mask
        from yoloseg.ops.nms import non_max_suppression
        from yoloseg.results import Results

        det = non_max_suppression(y, 0.25, 0.7, nc=len(self.names))[0]
        h, w = x_shape[2:]
        if not len(det):
            return Results(img, path, self.names)
        c, mh, mw = protos.shape[1:]
        logits = (det[:, 6:] @ protos[0].float().view(c, -1)).view(-1, mh, mw)
        up = F.interpolate(logits[None], (h, w), mode="bilinear", align_corners=False)[0]
        masks = crop_mask((up > 0).to(torch.uint8), det[:, :4])
        keep = masks.flatten(1).amax(1) > 0
        det, masks = det[keep], masks[keep]
        boxes = det[:, :6].clone()
        boxes[:, :4] = scale_boxes((h, w), boxes[:, :4], img.shape[:2])
        return Results(img, path, self.names, boxes=boxes, masks=masks)

    def __call__(self, path: str):
        import torch

        from yoloseg.data.sources import read_image

        img = read_image(path)
        t0 = time.perf_counter()
        x = self.preprocess(img)
        t1 = time.perf_counter()
        with torch.inference_mode():
            y, protos = self.forward(x)
            t2 = time.perf_counter()
            r = self.postprocess(y, protos, x.shape, img, path)
        t3 = time.perf_counter()
        r.speed = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        return [r]


def incumbent_model(model):
    """The incumbent's `.pt` inference model: a BatchNorm-fused fp32 copy, NCHW memory, eager, the whole head."""
    import copy

    return copy.deepcopy(model).float().eval().fuse()


def incumbent_pytorch(model, names: dict) -> IncumbentPipeline:
    """The `.pt` predict path: the incumbent's model, rectangular letterbox."""
    return IncumbentPipeline(incumbent_model(model), names, 640, auto=True)


def incumbent_val_runner(model, names: dict, batch: int = 16):
    """A backend that runs each (dynamic-shape) batch through the incumbent's model in one call, for yoloseg's
    validator (which then letterboxes rectangular batches, as for a `.pt` model)."""
    import torch

    from yoloseg.export.backends import Backend

    fused = incumbent_model(model)
    meta = {"names": names, "dynamic": True, "batch": batch, "stride": int(model.stride.max()), "imgsz": [640, 640]}

    class IncumbentForward(Backend):
        format = "incumbent-forward"

        def _run(self, im: torch.Tensor) -> list[torch.Tensor]:
            with torch.inference_mode():
                return list(fused(im))

    return IncumbentForward(Path("incumbent-forward"), meta, torch.device("cpu"), False)


def time_val_pairs(model, data: Path, pairs: int) -> dict:
    """yoloseg's val against the incumbent-forward proxy, `pairs` times each in turn: seconds and mAPs."""
    from yoloseg.config.defaults import get_config
    from yoloseg.engine.validator import run_validation

    project = tempfile.mkdtemp(prefix="bench-incumbent-val-")
    args = get_config({"data": str(data), "imgsz": 640, "batch": 16, "rect": True, "mode": "val", "plots": False,
                       "verbose": False, "project": project, "device": "cpu"})  # fmt: skip
    runners = {"yoloseg": model, "incumbent_forward": incumbent_val_runner(model, model.names)}
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    maps: dict[str, list[float]] = {}
    for _ in range(pairs):
        for name, runner in runners.items():
            t = time.perf_counter()
            m = run_validation(runner, {**args, "task": "segment"})
            seconds[name].append(time.perf_counter() - t)
            maps[name] = [round(m.box.map50, 5), round(m.box.map, 5), round(m.seg.map50, 5), round(m.seg.map, 5)]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "data": f"{data.parent.name}/{data.name}",
        "seconds_median": {k: round(v, 2) for k, v in med.items()},
        "seconds_all": {k: [round(t, 2) for t in v] for k, v in seconds.items()},
        "maps_box50_box_mask50_mask": maps,
        "ratio_yoloseg_vs_incumbent_forward": round(med["yoloseg"] / med["incumbent_forward"], 3),
        "ratio_yoloseg_vs_incumbent_its_machine_1thread": round(med["yoloseg"] / INCUMBENT_VAL_S, 3),
    }


def incumbent_openvino(model, names: dict, workdir: Path) -> IncumbentPipeline:
    """The OpenVINO path: a static 640x640 fp32 export at the device's default precision, padded to the square."""
    from bench.predict_latency import exported
    from yoloseg.export.backends import load_backend

    runner = load_backend(exported(model, "openvino", 640, workdir), ov_precision="auto")
    runner.reshapeable = False
    return IncumbentPipeline(lambda x: runner(x)[:2], names, 640, auto=False)


def check_same_job(ours, theirs, path: str) -> dict:
    """The rebuilt pipeline must find what yoloseg finds: the same boxes (to float rounding) and close polygons."""
    import numpy as np

    (a,), (b,) = ours(path), theirs(path)
    na, nb = len(a), len(b)
    if na != nb:
        raise RuntimeError(f"{path}: yoloseg found {na} detections, the rebuilt incumbent pipeline {nb}")
    out = {"detections": na}
    if na:
        box_diff = float(np.abs(a.boxes.data.numpy() - b.boxes.data.numpy()).max())
        if box_diff >= 0.05:
            raise RuntimeError(
                f"{path}: the boxes of yoloseg and the rebuilt incumbent pipeline differ by {box_diff} px"
            )
        out["max_box_diff_px"] = round(box_diff, 5)
        out["polygon_points"] = [[len(p) for p in a.masks.xy], [len(p) for p in b.masks.xy]]
    return out


def time_round_robin(pipelines: dict, path: str, rounds: int, warmup: int = 3) -> dict:
    """Per pipeline, the medians over `rounds` of end-to-end ms (the call plus masks.xy) and of each stage."""
    rows = {k: {"end_to_end": [], "preprocess": [], "inference": [], "postprocess": [], "masks_xy": []}
            for k in pipelines}  # fmt: skip
    for i in range(warmup + rounds):
        for name, predict in pipelines.items():
            t0 = time.perf_counter()
            (r,) = predict(path)
            t1 = time.perf_counter()
            _ = r.masks.xy if r.masks is not None else None
            t2 = time.perf_counter()
            if i >= warmup:
                row = rows[name]
                row["end_to_end"].append((t2 - t0) * 1e3)
                row["masks_xy"].append((t2 - t1) * 1e3)
                for k in ("preprocess", "inference", "postprocess"):
                    row[k].append(r.speed[k])
    return {name: {f"{k}_ms": round(statistics.median(v), 2) for k, v in row.items()} for name, row in rows.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=SHARED / "reference" / "yolo11n-seg-coco128.pt")
    ap.add_argument(
        "--images", nargs="+", type=Path, default=[SHARED / "data" / "images" / n for n in ("bus.jpg", "zidane.jpg")]
    )
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-openvino", action="store_true", help="time the PyTorch pipelines only")
    ap.add_argument("--val-pairs", type=int, default=0, help="also time validation, N times each way in turn")
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "coco128-seg" / "data_all128.yaml")
    add_keep_freed_memory(ap)
    ap.add_argument("--out", type=Path, help="also write the JSON here (atomically)")
    a = ap.parse_args(argv)
    setup_process(a.keep_freed_memory, a.threads)
    import torch

    from bench.predict_latency import load_reference_model
    from yoloseg.engine.predictor import Predictor
    from yoloseg.utils.memory import malloc_status

    model = load_reference_model(a.weights)
    names = model.names
    args = {"imgsz": 640, "verbose": False, "device": "cpu"}
    pipelines = {
        "yoloseg_pytorch": Predictor(model, args).predict,
        "yoloseg_pytorch_bf16": Predictor(model, {**args, "half": True}).predict,
        "incumbent_pytorch": incumbent_pytorch(model, names),
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-incumbent-"))
    if not a.no_openvino:
        pipelines["incumbent_openvino"] = incumbent_openvino(model, names, workdir)
    result: dict = {
        "benchmark": "incumbent_config",
        "threads": a.threads,
        "rounds": a.rounds,
        "malloc": malloc_status(),
        "weights": a.weights.name,
        "note": "the incumbent's PyTorch and OpenVINO predict paths rebuilt from yoloseg's parts (see the script's "
        "docstring), timed round-robin with yoloseg's predictors on this machine",
        "images": {},
    }
    for path in a.images:
        check = check_same_job(pipelines["yoloseg_pytorch"], pipelines["incumbent_pytorch"], str(path))
        rows = time_round_robin(pipelines, str(path), a.rounds)
        ratios = {
            "yoloseg_pytorch_vs_incumbent_pytorch": rows["yoloseg_pytorch"]["end_to_end_ms"]
            / rows["incumbent_pytorch"]["end_to_end_ms"],
            "yoloseg_pytorch_bf16_vs_incumbent_pytorch": rows["yoloseg_pytorch_bf16"]["end_to_end_ms"]
            / rows["incumbent_pytorch"]["end_to_end_ms"],
        }
        if "incumbent_openvino" in rows:
            best = min(rows["yoloseg_pytorch"]["end_to_end_ms"], rows["yoloseg_pytorch_bf16"]["end_to_end_ms"])
            ratios["yoloseg_best_vs_incumbent_openvino"] = best / rows["incumbent_openvino"]["end_to_end_ms"]
        if path.name == "bus.jpg":  # this machine against the incumbent's, for the same pipeline
            ratios["incumbent_pytorch_here_vs_its_machine"] = (
                rows["incumbent_pytorch"]["end_to_end_ms"] / INCUMBENT_2THREADS["pytorch"]
            )
            if "incumbent_openvino" in rows:
                ratios["incumbent_openvino_here_vs_its_machine"] = (
                    rows["incumbent_openvino"]["end_to_end_ms"] / INCUMBENT_2THREADS["openvino"]
                )
        result["images"][path.name] = {
            "check": check,
            "rows": rows,
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
        }
        print(path.name, json.dumps(result["images"][path.name]), file=sys.stderr, flush=True)
    if a.val_pairs:
        result["val"] = time_val_pairs(model, a.data, a.val_pairs)
        print("val", json.dumps(result["val"]), file=sys.stderr, flush=True)
    result.update(
        incumbent_bus_end_to_end_ms_2threads_its_machine=INCUMBENT_2THREADS,
        torch=torch.__version__,
        python=platform.python_version(),
        cpu=platform.processor() or platform.machine(),
    )
    emit(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
