"""The inference copy of a model shared by prediction and standalone validation."""

from __future__ import annotations

import copy

import torch
from torch import nn


def inference_copy(
    model: nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool, inplace: bool = True
) -> nn.Module:
    """An eval-mode, BN-fused copy of `model` on `device` in `dtype` (channels-last if asked); `model` is untouched."""
    fused = model.is_fused() if hasattr(model, "is_fused") else True
    model = copy.deepcopy(model).eval()
    if hasattr(model, "fuse") and not fused:
        model.fuse()
    for q in model.parameters():
        q.requires_grad_(False)
    for m in model.modules():  # act(conv(x)) only ever sees a fresh tensor: in place saves ~25% of CPU time
        if inplace and isinstance(getattr(m, "act", None), nn.SiLU) and hasattr(m, "conv"):
            m.act.inplace = True
    model = model.to(device=device, dtype=dtype)
    return model.to(memory_format=torch.channels_last) if channels_last else model
