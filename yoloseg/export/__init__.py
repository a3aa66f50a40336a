"""Export a YOLOModel to deployable formats: a table from format name to exporter, and `export_model`.

Every exporter has the signature `(model, file, cfg: ExportConfig, metadata: dict, sample) -> Path` and receives a
fused, frozen, eval-mode copy of the model on the export device; `export_model` prepares that copy, checks the
arguments and the packages a format needs, times the export and prints how to use the result.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.log import log
from .common import (
    ExportConfig,
    build_metadata,
    export_device,
    file_size_mb,
    max_stride,
    prepare_model,
    umask_permissions,
)
from .onnx import export_onnx
from .openvino import export_openvino
from .torchscript import export_torchscript

EXPORTERS: dict[str, Callable[..., Path]] = {
    "onnx": export_onnx,
    "torchscript": export_torchscript,
    "openvino": export_openvino,
}


@dataclass(frozen=True)
class FormatInfo:
    suffix: str  # file suffix, or folder suffix ending in '_model'
    packages: tuple[str, ...]  # importable modules the exporter needs
    half_on_cpu: bool  # whether half=True works without CUDA (OpenVINO compresses weights instead)


FORMATS: dict[str, FormatInfo] = {
    "onnx": FormatInfo(".onnx", ("onnx",), False),
    "torchscript": FormatInfo(".torchscript", (), False),
    "openvino": FormatInfo("_openvino_model", ("openvino", "onnx"), True),
}
ALIASES = {"ts": "torchscript", "ov": "openvino"}
# Formats of the incumbent that yoloseg does not write (yet), with the file each would produce.
UNSUPPORTED = {
    "engine": "TensorRT",
    "coreml": "CoreML",
    "coreai": "Core AI",
    "saved_model": "TensorFlow SavedModel",
    "pb": "TensorFlow GraphDef",
    "tflite": "TensorFlow Lite",
    "litert": "LiteRT",
    "edgetpu": "TF Edge TPU",
    "tfjs": "TensorFlow.js",
    "paddle": "PaddlePaddle",
    "mnn": "MNN",
    "ncnn": "NCNN",
    "imx": "Sony IMX500",
    "rknn": "Rockchip RKNN",
    "executorch": "ExecuTorch",
    "axelera": "Axelera",
    "deepx": "DEEPX",
    "qnn": "Qualcomm QNN",
    "hailo": "Hailo",
    "ascend": "Ascend",
    "xilinx": "Xilinx",
    "keras": "Keras",
}


def supported_formats() -> str:
    return ", ".join(FORMATS)


def resolve_format(name: str | None) -> str:
    """Normalise a `format=` value; a clear ValueError for anything yoloseg cannot write."""
    key = str(name or "").strip().lower().lstrip(".")
    key = ALIASES.get(key, key)
    if key in FORMATS:
        return key
    if key in ("pt", "pytorch", "torch"):
        raise ValueError("format=pt: the model is already a PyTorch checkpoint; choose one of " + supported_formats())
    if key in UNSUPPORTED:
        raise ValueError(
            f"format={key} ({UNSUPPORTED[key]}) is not supported by yoloseg; supported formats are "
            f"{supported_formats()}. Export to onnx and convert it with the {UNSUPPORTED[key]} tools."
        )
    raise ValueError(f"format={name!r} is not a known export format; supported formats are {supported_formats()}")


def check_requirements(fmt: str) -> None:
    """ImportError naming the missing packages of a format and the extra that installs them."""
    missing = [p for p in FORMATS[fmt].packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(
            f"format={fmt} needs {', '.join(missing)}, which is not installed: pip install 'yoloseg[export]' "
            f"(or pip install {' '.join(missing)})"
        )


def output_path(weights_path: str | Path, fmt: str) -> Path:
    """best.pt -> best.onnx / best.torchscript / best_openvino_model."""
    weights_path = Path(weights_path)
    suffix = FORMATS[fmt].suffix
    if suffix.startswith("."):
        return weights_path.with_suffix(suffix)
    return weights_path.with_name(weights_path.stem + suffix)


def check_config(fmt: str, cfg: ExportConfig, task: str, device: torch.device) -> None:
    """Reject argument combinations a format cannot honour, before any work."""
    if cfg.half and device.type != "cuda" and not FORMATS[fmt].half_on_cpu:
        raise ValueError(f"half=True for format={fmt} needs a CUDA device (device=0); on CPU export in fp32")
    if cfg.int8 and fmt != "openvino":
        raise ValueError(f"int8=True is supported for format=openvino only, not format={fmt}")
    if cfg.int8 and importlib.util.find_spec("nncf") is None:
        raise ImportError("int8=True needs NNCF for the OpenVINO post-training quantisation: pip install nncf")
    if cfg.nms and fmt == "torchscript":
        raise ValueError("nms=True / masks=True are supported for format=onnx and format=openvino, not torchscript")
    if cfg.masks and task != "segment":
        raise ValueError("masks=True needs a segmentation model")
    if cfg.nms and cfg.max_det < 1:
        raise ValueError(f"max_det={cfg.max_det}: must be >= 1 for nms=True")


def _imgsz_arg(imgsz: tuple[int, int]) -> str:
    return str(imgsz[0]) if imgsz[0] == imgsz[1] else f"[{imgsz[0]},{imgsz[1]}]"


@dataclass
class ExportRun:
    """What `on_export_start` / `on_export_end` callbacks receive (`file` is set once written)."""

    model: nn.Module
    args: dict[str, Any]
    format: str
    cfg: ExportConfig
    metadata: dict[str, Any]
    file: Path | None = None


def export_model(
    model: nn.Module,
    args: dict[str, Any],
    weights_path: str | Path,
    callbacks: dict[str, list[Callable]] | None = None,
) -> Path:
    """Export `model` in `args['format']` beside `weights_path`; returns the file or folder written.

    Args:
        model: a YOLOModel (any mode; a fused eval copy is exported, the model itself is untouched).
        args: the flat config (format, imgsz, batch, dynamic, half, int8, opset, simplify, nms, masks, conf, iou,
            max_det, agnostic_nms, device, data, fraction; others ignored).
        weights_path: the checkpoint the model came from; the export gets its stem (best.pt -> best.onnx).
        callbacks: {event: [fn]}; `on_export_start` / `on_export_end` functions get an `ExportRun`.
    """
    t0 = time.perf_counter()
    fmt = resolve_format(args.get("format", "torchscript"))
    check_requirements(fmt)
    stride = max_stride(model)
    cfg = ExportConfig.from_args(args, stride)
    device = export_device(cfg.device)
    task = getattr(model, "task", "segment")
    check_config(fmt, cfg, task, device)
    fp16 = cfg.half and not FORMATS[fmt].half_on_cpu
    net = prepare_model(model, device, half=fp16)
    channels = int((getattr(model, "yaml", {}) or {}).get("channels", 3))
    sample = torch.zeros(cfg.batch, channels, *cfg.imgsz, device=device, dtype=torch.float16 if fp16 else torch.float)
    with torch.no_grad():
        out = net(sample)  # a dry run: surfaces shape errors before tracing
    shapes = [tuple(t.shape) for t in (out if isinstance(out, (tuple, list)) else [out])]
    metadata = build_metadata(model, cfg)
    file = output_path(weights_path, fmt)
    run = ExportRun(model, args, fmt, cfg, metadata)
    for fn in (callbacks or {}).get("on_export_start", []):
        fn(run)
    log.info(f"\nExporting {Path(weights_path).name} to {fmt}: input {tuple(sample.shape)}, output shapes {shapes}")
    EXPORTERS[fmt](net, file, cfg, metadata, sample)
    umask_permissions(file)
    dt = time.perf_counter() - t0
    run.file = file
    for fn in (callbacks or {}).get("on_export_end", []):
        fn(run)
    sz = _imgsz_arg(cfg.imgsz)
    data = args.get("data") or (getattr(model, "args", {}) or {}).get("data") or "<data.yaml>"
    log.info(
        f"Export complete ({dt:.1f}s)\nResults saved to {file} ({file_size_mb(file):.1f} MB)\n"
        f"Predict:  yolo predict task={task} model={file} imgsz={sz}\n"
        f"Validate: yolo val task={task} model={file} imgsz={sz} data={data}"
    )
    return file


__all__ = ["EXPORTERS", "FORMATS", "ExportConfig", "ExportRun", "export_model", "resolve_format"]
