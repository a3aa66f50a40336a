"""Model summaries: layer / parameter / gradient counts and GFLOPs (torch's own flop counter)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..utils.log import log


def count_layers(model: nn.Module) -> int:
    """Number of leaf modules (the incumbent's 'layers' figure: 203 for yolo11n-seg, 113 fused)."""
    return sum(1 for m in model.modules() if not any(True for _ in m.children()))


def count_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """GFLOPs of one eval-mode forward pass at `imgsz` (multiply-add = 2 FLOPs)."""
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    p = next(model.parameters())
    x = torch.zeros(1, getattr(model, "yaml", {}).get("channels", 3), h, w, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def model_info(
    model: nn.Module, detailed: bool = False, verbose: bool = True, imgsz: int = 640
) -> tuple[int, int, int, float]:
    """Print and return (layers, parameters, gradients, GFLOPs)."""
    n_params = sum(p.numel() for p in model.parameters())
    n_grads = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_layers = count_layers(model)
    flops = count_flops(model, imgsz)
    if verbose:
        if detailed:
            log.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20}")
            for i, (name, p) in enumerate(model.named_parameters()):
                log.info(f"{i:5g} {name:>40} {str(p.requires_grad):>9} {p.numel():12g} {str(list(p.shape)):>20}")
        fused = " (fused)" if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) else ""
        name = getattr(model, "yaml", {}).get("yaml_file", type(model).__name__)
        log.info(
            f"{name} summary{fused}: {n_layers:,} layers, {n_params:,} parameters, {n_grads:,} gradients, "
            f"{flops:.1f} GFLOPs"
        )
    return n_layers, n_params, n_grads, flops
