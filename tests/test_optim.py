"""Optimizer groups and kernels, and the EMA of weights (engine.optim)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from yoloseg.engine.optim import ModelEMA, build_optimizer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))


@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD", "NAdam", "RMSProp"])
def test_optimizer_groups_and_fused_cpu_kernels(name):
    """Three groups (biases, decayed conv weights, undecayed norm weights); on a CPU Adam, AdamW and SGD take the fused
    kernel, the others PyTorch's default; a fused step moves the weights as the per-parameter loop does."""
    net = _net()
    opt, resolved = build_optimizer(net, name, lr=0.01, momentum=0.9, decay=5e-4)
    biases, weights, norms = (g["params"] for g in opt.param_groups)
    assert [p.shape for p in biases] == [(8,), (4,)]  # the BN bias and the last conv's bias
    assert [p.shape for p in weights] == [(8, 3, 3, 3), (4, 8, 1, 1)] and [p.shape for p in norms] == [(8,)]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    fused = name in ("AdamW", "Adam", "SGD")
    assert all(bool(g.get("fused")) == fused for g in opt.param_groups)
    assert resolved["name"] == name

    loop = copy.deepcopy(net)
    reference = type(opt)(
        [
            {**g, "params": [dict(loop.named_parameters())[n] for n in _names(net, g["params"])]}
            for g in opt.param_groups
        ]
    )
    for g in reference.param_groups:
        g["fused"] = None
    x = torch.rand(2, 3, 8, 8)
    for _ in range(3):
        for model, optimizer in ((net, opt), (loop, reference)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(net.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, _net().state_dict()[_name_of(net, a)])  # it moved


def _names(net: nn.Module, params: list[torch.Tensor]) -> list[str]:
    return [_name_of(net, p) for p in params]


def _name_of(net: nn.Module, p: torch.Tensor) -> str:
    return next(n for n, q in net.named_parameters() if q is p)


def test_auto_optimizer_choice():
    net = _net()
    opt, resolved = build_optimizer(net, "auto", iterations=100, nc=4)
    assert isinstance(opt, torch.optim.AdamW) and resolved["lr"] == round(0.002 * 5 / 8, 6)
    opt, resolved = build_optimizer(net, "auto", iterations=20_000)
    assert isinstance(opt, torch.optim.SGD) and resolved["lr"] == 0.01 and resolved["warmup_bias_lr"] == 0.0
    with pytest.raises(ValueError, match="optimizer='Lion' is not supported"):
        build_optimizer(net, "Lion")


def test_ema_update_is_the_decayed_average_of_the_floating_state():
    """Every floating parameter and buffer (BN running stats too) becomes d * ema + (1 - d) * model, with the bits of
    one mul_ and add_ per tensor; integer buffers keep the EMA's value; a replaced EMA module is followed."""
    net = _net()
    ema = ModelEMA(net, updates=10)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.add_(torch.rand_like(t.float()).to(t.dtype) if t.dtype.is_floating_point else 5)
    before = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    ema.update(net)
    d = 0.9999 * (1 - math.exp(-11 / 2000))
    state = net.state_dict()
    for k, v in ema.ema.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.equal(v, before[k].clone().mul_(d).add_(state[k], alpha=1 - d)), k
        else:
            assert torch.equal(v, before[k]), k
    assert ema.updates == 11 and not any(p.requires_grad for p in ema.ema.parameters())
    ema.ema = copy.deepcopy(net)
    ema.update(net)  # the average of identical weights stays (within rounding) where it is
    for k, v in ema.ema.state_dict().items():
        torch.testing.assert_close(v, state[k])
