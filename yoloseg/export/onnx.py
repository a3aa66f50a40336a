"""ONNX export with the TorchScript-based exporter of `torch.onnx` (`dynamo=False`).

The legacy exporter is used on purpose: it keeps symbolic batch/height/width through the anchor construction, and
it maps the in-graph NMS to the ONNX `NonMaxSuppression` operator through a `symbolic` (see postprocess.py).

I/O: input `images` (B, 3, H, W) float32 RGB in [0, 1]. Outputs, by mode:
- plain: `output0` (B, 4 + nc + 32, A) and `output1` (B, 32, H/4, W/4) protos (detect: `output0` (B, 4 + nc, A));
- nms=True: `output0` (B, max_det, 6 + 32) rows x1 y1 x2 y2 conf cls coeffs, zero-padded, and `output1` protos;
- masks=True: `boxes` (B, max_det, 4), `scores` (B, max_det), `classes` (B, max_det) int64, `masks`
  (B, max_det, H, W) uint8 at input resolution.
Metadata: every key of `common.build_metadata` as an ONNX metadata_props string (Python literals).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.files import atomic_path
from ..utils.log import log
from .common import ExportConfig, quiet_tracing
from .postprocess import End2End


def default_opset() -> int:
    """The highest opset the installed TorchScript-based exporter can write."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:
        return 17


def io_names(task: str, cfg: ExportConfig) -> tuple[list[str], dict[str, dict[int, str]]]:
    """Output names and the dynamic axes of the input and every output."""
    if cfg.masks:
        outputs = ["boxes", "scores", "classes", "masks"]
        axes = {"boxes": {0: "batch"}, "scores": {0: "batch"}, "classes": {0: "batch"}}
        axes["masks"] = {0: "batch", 2: "height", 3: "width"}
    else:
        outputs = ["output0", "output1"] if task == "segment" else ["output0"]
        axes = {"output0": {0: "batch"} if cfg.nms else {0: "batch", 2: "anchors"}}
        if task == "segment":
            axes["output1"] = {0: "batch", 2: "mask_height", 3: "mask_width"}
    axes["images"] = {0: "batch", 2: "height", 3: "width"}
    return outputs, axes


def graph_module(model: nn.Module, cfg: ExportConfig) -> nn.Module:
    """The module to trace: the model itself, or the model with in-graph NMS / masks."""
    if not cfg.nms:
        return model
    nc = int(getattr(model, "nc", len(getattr(model, "names", {})) or 80))
    return End2End(model, nc, cfg.conf, cfg.iou, cfg.max_det, cfg.agnostic_nms, cfg.masks).eval()


def add_metadata(onnx_model: Any, metadata: dict[str, Any]) -> None:
    """Set metadata_props from a dict; values are stored as str() (Python literals for dicts and lists)."""
    del onnx_model.metadata_props[:]
    for key, value in metadata.items():
        prop = onnx_model.metadata_props.add()
        prop.key, prop.value = str(key), str(value)


def simplify_model(onnx_model: Any) -> Any:
    """onnxslim when installed; otherwise the model unchanged with a note."""
    if importlib.util.find_spec("onnxslim") is None:
        log.info("ONNX: simplify=True skipped: onnxslim is not installed (pip install onnxslim)")
        return onnx_model
    import onnxslim

    try:
        return onnxslim.slim(onnx_model)
    except Exception as e:  # a failed simplification must not fail the export
        log.warning(f"WARNING: ONNX: onnxslim failed ({e}); keeping the unsimplified model")
        return onnx_model


def export_onnx(
    model: nn.Module, file: Path, cfg: ExportConfig, metadata: dict[str, Any], sample: torch.Tensor
) -> Path:
    """Trace `model` (already fused, eval, on its export device) to `file` (.onnx); returns `file`."""
    import onnx

    opset = cfg.opset or default_opset()
    task = metadata.get("task", "segment")
    outputs, axes = io_names(task, cfg)
    module = graph_module(model, cfg)
    with atomic_path(file) as tmp:
        with quiet_tracing(), torch.no_grad():
            torch.onnx.export(
                module,
                (sample,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=["images"],
                output_names=outputs,
                dynamic_axes=axes if cfg.dynamic else None,
            )
        onnx_model = onnx.load(str(tmp))
        onnx.checker.check_model(onnx_model)
        if cfg.simplify:
            onnx_model = simplify_model(onnx_model)
        add_metadata(onnx_model, metadata)
        onnx.save(onnx_model, str(tmp))
    log.info(f"ONNX: opset {opset}, outputs {', '.join(outputs)}")
    return file
