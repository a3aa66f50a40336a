"""OpenVINO export: `<stem>_openvino_model/` holding `<stem>.xml`, `<stem>.bin` and `metadata.yaml`.

Goes through the ONNX exporter (same graph, same I/O names, in-graph NMS included), then `openvino.convert_model`
and `openvino.save_model(compress_to_fp16=half)`. `int8=True` runs NNCF post-training quantisation on images of
the `data=` dataset's val split (letterboxed to imgsz like predict); it needs `pip install nncf`.

A static export (dynamic=False) declares the fixed input shape (batch, 3, imgsz) like the incumbent's, but its graph
is traced with symbolic height and width, so the shapes inside it are computed rather than baked in: the IR can be
reshaped to any other stride-multiple size. `metadata.yaml` says so (`reshapeable: true`), and yoloseg's OpenVINO
backend then predicts at the image's own letterboxed shape, as PyTorch does (bus.jpg: 640x480, a quarter fewer
pixels than the 640x640 square), compiling once per shape.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ..utils.log import log
from .backends import openvino_core
from .common import ExportConfig, atomic_dir
from .onnx import export_onnx

MAX_CALIBRATION_IMAGES = 300


def letterbox(image: np.ndarray, shape: tuple[int, int], color: int = 114) -> np.ndarray:
    """Resize (H, W, 3) keeping the aspect ratio (up or down) and centre it on a `shape` canvas of `color`."""
    import cv2

    h0, w0 = image.shape[:2]
    gain = min(shape[0] / h0, shape[1] / w0)
    h, w = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    if (h, w) != (h0, w0):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    top, left = round((shape[0] - h) / 2 - 0.1), round((shape[1] - w) / 2 - 0.1)
    canvas = np.full((shape[0], shape[1], 3), color, dtype=np.uint8)
    canvas[top : top + h, left : left + w] = image
    return canvas


def calibration_batches(
    data: str | None, imgsz: tuple[int, int], batch: int, fraction: float = 1.0
) -> list[np.ndarray]:
    """Val-split images of dataset `data` as float32 (batch, 3, H, W) RGB arrays in [0, 1] (at most 300 images)."""
    if not data:
        raise ValueError("int8=True needs calibration images: pass data=<dataset.yaml>, e.g. data=coco8-seg.yaml")
    from ..data.dataset_yaml import check_dataset
    from ..data.images import imread, list_images

    files = list_images(check_dataset(data)["val"])
    files = files[: max(1, min(MAX_CALIBRATION_IMAGES, round(len(files) * fraction)))]
    if len(files) < batch:
        raise ValueError(f"int8=True: {len(files)} calibration images in {data}, fewer than batch={batch}")
    images = [letterbox(imread(f), imgsz)[..., ::-1].transpose(2, 0, 1) for f in files]  # BGR HWC -> RGB CHW
    stacked = np.ascontiguousarray(np.stack(images)).astype(np.float32) / 255.0
    n = len(stacked) // batch * batch
    return [stacked[i : i + batch] for i in range(0, n, batch)]


def quantize_int8(ov_model: Any, cfg: ExportConfig) -> Any:
    """NNCF post-training quantisation; the box decoding / sigmoid ops of the head stay in float."""
    if importlib.util.find_spec("nncf") is None:
        raise ImportError("OpenVINO int8=True needs NNCF for the post-training quantisation: pip install nncf")
    import nncf

    batches = calibration_batches(cfg.data, cfg.imgsz, cfg.batch, cfg.fraction)
    log.info(f"OpenVINO: int8 calibration on {sum(len(b) for b in batches)} images from {cfg.data}")
    return nncf.quantize(
        ov_model,
        nncf.Dataset(batches),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(types=["Multiply", "Subtract", "Sigmoid"]),
    )


def export_openvino(
    model: nn.Module, folder: Path, cfg: ExportConfig, metadata: dict[str, Any], sample: torch.Tensor
) -> Path:
    """Write `folder` (`<stem>_openvino_model/`) atomically; returns `folder`."""
    import openvino as ov

    if cfg.int8 and importlib.util.find_spec("nncf") is None:  # fail before any work
        raise ImportError("OpenVINO int8=True needs NNCF for the post-training quantisation: pip install nncf")
    stem = folder.name.removesuffix("_openvino_model")
    reshapeable = not cfg.dynamic
    if reshapeable:
        metadata = {**metadata, "reshapeable": True}
    with atomic_dir(folder) as tmp:
        onnx_file = export_onnx(model, tmp / f"{stem}.onnx", replace(cfg, dynamic=True), metadata, sample)
        # convert_model comes from openvino.tools.ovc; a runtime-only install lacks it, and the runtime's own ONNX
        # frontend reads the same graph
        convert = getattr(ov, "convert_model", None) or openvino_core().read_model
        ov_model = convert(str(onnx_file))
        onnx_file.unlink()
        if reshapeable:  # declare the static shape; the graph inside keeps computing its shapes from it
            ov_model.reshape({ov_model.inputs[0]: ov.PartialShape(list(sample.shape))})
        if cfg.int8:
            ov_model = quantize_int8(ov_model, cfg)
        for key, value in metadata.items():
            ov_model.set_rt_info(str(value), ["model_info", str(key)])
        ov.save_model(ov_model, str(tmp / f"{stem}.xml"), compress_to_fp16=cfg.half)
        (tmp / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))
    return folder
