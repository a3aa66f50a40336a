"""Optimiser construction (three parameter groups), learning-rate schedule, warmup and the EMA of weights."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils.log import log


def build_optimizer(
    model: nn.Module,
    name: str = "auto",
    lr: float = 0.01,
    momentum: float = 0.937,
    decay: float = 5e-4,
    iterations: float = 1e5,
    nc: int = 80,
) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """Optimizer with groups [0] biases, [1] conv/linear weights (decayed), [2] norm weights (not decayed).

    `auto`: SGD(0.01, momentum 0.9) for runs over 10,000 iterations, else AdamW with lr from the class count.
    Returns the optimizer and the resolved {name, lr, momentum} (auto also sets warmup_bias_lr to 0).

    On a CPU, Adam, AdamW and SGD run PyTorch's fused kernels: one call per step instead of ~10 small ops per
    parameter (PyTorch's CPU default): yolo11n-seg's AdamW step took 5.6-6.7 against 25.6-29.6 ms on our 2-core CPU
    (bench/train_step_parts.py). SGD gives the same bits; Adam(W) differ from the per-parameter loop by rounding
    (~2e-7 after 50 steps). GPUs keep PyTorch's default (foreach), which works with the fp16 grad scaler as is.
    """
    resolved: dict[str, Any] = {}
    if name == "auto":
        if iterations > 10_000:
            name, lr, momentum = "SGD", 0.01, 0.9
        else:
            name, lr, momentum = "AdamW", round(0.002 * 5 / (4 + nc), 6), 0.9
        resolved["warmup_bias_lr"] = 0.0
        log.info(f"optimizer: 'optimizer=auto' chose {name}(lr={lr}, momentum={momentum})")
    weights, norms, biases = [], [], []
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, norm_types):
                norms.append(p)
            else:
                weights.append(p)
    betas = (momentum, 0.999)
    on_cpu = all(p.device.type == "cpu" for p in weights + norms + biases)
    fused = {"fused": True} if on_cpu and name in ("Adam", "AdamW", "SGD") else {}
    if name in ("Adam", "Adamax", "AdamW", "NAdam", "RAdam"):
        optimizer = getattr(torch.optim, name)(biases, lr=lr, betas=betas, weight_decay=0.0, **fused)
    elif name == "RMSProp":
        optimizer = torch.optim.RMSprop(biases, lr=lr, momentum=momentum)
    elif name == "SGD":
        optimizer = torch.optim.SGD(biases, lr=lr, momentum=momentum, nesterov=True, **fused)
    else:
        raise ValueError(
            f"optimizer={name!r} is not supported; use SGD, Adam, Adamax, AdamW, NAdam, RAdam, RMSProp or auto"
        )
    optimizer.add_param_group({"params": weights, "weight_decay": decay})
    optimizer.add_param_group({"params": norms, "weight_decay": 0.0})
    log.info(
        f"optimizer: {name}(lr={lr}, momentum={momentum}) with parameter groups "
        f"{len(weights)} weight(decay={decay}), {len(norms)} norm weight(decay=0.0), {len(biases)} bias(decay=0.0)"
    )
    resolved.update(name=name, lr=lr, momentum=momentum)
    return optimizer, resolved


def lr_lambda(epochs: int, lrf: float, cosine: bool):
    """Multiplier of lr0 at epoch e: linear or cosine from 1 to lrf over `epochs`."""
    if cosine:
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda e: max(1 - e / epochs, 0) * (1.0 - lrf) + lrf


def warmup(
    optimizer: torch.optim.Optimizer,
    ni: int,
    nw: int,
    epoch: int,
    lf,
    warmup_bias_lr: float,
    warmup_momentum: float,
    momentum: float,
) -> None:
    """Per-iteration warmup: bias lr from warmup_bias_lr, other lrs from 0, momentum from warmup_momentum."""
    xi = [0, nw]
    for j, group in enumerate(optimizer.param_groups):
        start = warmup_bias_lr if j == 0 else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf(epoch)]))
        if "momentum" in group:
            group["momentum"] = float(np.interp(ni, xi, [warmup_momentum, momentum]))
        elif "betas" in group:
            group["betas"] = (float(np.interp(ni, xi, [warmup_momentum, momentum])), group["betas"][1])


class ModelEMA:
    """Exponential moving average of a model's weights and buffers; decay ramps up as d·(1 − exp(−updates/tau))."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.updates = updates
        self.decay_max, self.tau = decay, tau
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self._floats: tuple[nn.Module, list[str], list[torch.Tensor]] | None = None

    def decay(self) -> float:
        return self.decay_max * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = d * ema + (1 - d) * model over the floating-point state, in two foreach calls (the same bits as one
        mul_ and add_ per tensor; with the EMA's side gathered once, 7.5-9.0 against 13.6-16.8 ms per step for
        yolo11n-seg on our 2-core CPU, bench/train_step_parts.py)."""
        self.updates += 1
        d = self.decay()
        if self._floats is None or self._floats[0] is not self.ema:  # gathered again if ema is replaced
            floats = [(k, v) for k, v in self.ema.state_dict().items() if v.dtype.is_floating_point]
            self._floats = (self.ema, [k for k, _ in floats], [v for _, v in floats])
        _, keys, ema = self._floats
        state = unwrap(model).state_dict()
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, [state[k] for k in keys], alpha=1 - d)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
