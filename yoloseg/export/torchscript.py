"""TorchScript export: `torch.jit.trace` of the fused eval model; metadata as JSON in `config.txt`.

The traced module returns a tuple: (y (B, 4 + nc + 32, A), protos (B, 32, H/4, W/4)) for segment, (y,) for
detect. Shapes stay symbolic in the trace, so any stride-multiple input size works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils.files import atomic_path
from .common import ExportConfig, quiet_tracing


class TupleOutput(nn.Module):
    """Makes the traced outputs a tuple whatever the model returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def export_torchscript(
    model: nn.Module, file: Path, cfg: ExportConfig, metadata: dict[str, Any], sample: torch.Tensor
) -> Path:
    """Trace `model` (fused, eval, on its export device) to `file` (.torchscript); returns `file`."""
    if cfg.nms:
        raise ValueError("nms=True / masks=True are supported for format=onnx and format=openvino, not torchscript")
    extra = {"config.txt": json.dumps(metadata)}
    with quiet_tracing(), torch.no_grad(), atomic_path(file) as tmp:
        traced = torch.jit.trace(TupleOutput(model), sample, strict=False, check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return file
