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

import functools
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


def calibration_groups(data: str | None, batch: int, fraction: float = 1.0) -> list[list[Path]]:
    """The val-split image files of dataset `data` in groups of `batch` (at most 300 images); checked before any export
    work, so a missing dataset or too few images fail at once."""
    if not data:
        raise ValueError("int8=True needs calibration images: pass data=<dataset.yaml>, e.g. data=coco8-seg.yaml")
    from ..data.dataset_yaml import check_dataset
    from ..data.images import list_images

    files = list_images(check_dataset(data)["val"])
    files = files[: max(1, min(MAX_CALIBRATION_IMAGES, round(len(files) * fraction)))]
    if len(files) < batch:
        raise ValueError(f"int8=True: {len(files)} calibration images in {data}, fewer than batch={batch}")
    n = len(files) // batch * batch
    return [files[i : i + batch] for i in range(0, n, batch)]


def calibration_batch(files: list[Path], imgsz: tuple[int, int]) -> np.ndarray:
    """Images letterboxed to imgsz as predict does (centred, grey 114) -> float32 (batch, 3, H, W) RGB in [0, 1]. Read
    one group at a time as NNCF asks for it, so calibrating holds one batch of images, not all of them."""
    from ..data.augment.letterbox import letterbox
    from ..data.images import imread

    images = [letterbox(imread(f), imgsz)[0][..., ::-1].transpose(2, 0, 1) for f in files]  # BGR HWC -> RGB CHW
    return np.ascontiguousarray(np.stack(images), dtype=np.float32) / 255.0


def quantize_int8(ov_model: Any, cfg: ExportConfig, groups: list[list[Path]]) -> Any:
    """NNCF post-training quantisation on the image `groups`; the box decoding / sigmoid ops of the head stay in
    float."""
    import nncf

    log.info(f"OpenVINO: int8 calibration on {sum(len(g) for g in groups)} images from {cfg.data}")
    return nncf.quantize(
        ov_model,
        nncf.Dataset(groups, functools.partial(calibration_batch, imgsz=tuple(cfg.imgsz))),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(groups),
        ignored_scope=nncf.IgnoredScope(types=["Multiply", "Subtract", "Sigmoid"]),
    )


def export_openvino(
    model: nn.Module, folder: Path, cfg: ExportConfig, metadata: dict[str, Any], sample: torch.Tensor
) -> Path:
    """Write `folder` (`<stem>_openvino_model/`) atomically; returns `folder`."""
    import openvino as ov

    if cfg.int8 and importlib.util.find_spec("nncf") is None:  # fail before any work
        raise ImportError("OpenVINO int8=True needs NNCF for the post-training quantisation: pip install nncf")
    groups = calibration_groups(cfg.data, cfg.batch, cfg.fraction) if cfg.int8 else []
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
            ov_model = quantize_int8(ov_model, cfg, groups)
        for key, value in metadata.items():
            ov_model.set_rt_info(str(value), ["model_info", str(key)])
        ov.save_model(ov_model, str(tmp / f"{stem}.xml"), compress_to_fp16=cfg.half)
        (tmp / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))
    return folder
