"""Training checkpoints in our format: build, save atomically, strip for release, and the RNG state for resume."""

from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..nn.checkpoint import save_checkpoint


def make_checkpoint(
    model: nn.Module,
    train_args: dict[str, Any] | None = None,
    half: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A plain-dict checkpoint (tensors and primitives only) of `model`'s weights, config and names."""
    state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return {
        "format": "yoloseg",
        "version": __version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "license": "Apache-2.0",
        "model_yaml": dict(getattr(model, "yaml", {})),
        "names": {int(k): str(v) for k, v in getattr(model, "names", {}).items()},
        "task": getattr(model, "task", "segment"),
        "stride": [float(s) for s in getattr(model, "stride", torch.tensor([8, 16, 32]))],
        "state_dict": state,
        "train_args": plain_args(train_args or {}),
        **extra,
    }


def plain_args(args: dict[str, Any]) -> dict[str, Any]:
    """Args with paths turned into strings (checkpoints and args.yaml hold plain data only)."""
    out = {}
    for k, v in args.items():
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors/primitives (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def strip_checkpoint(path: Path) -> None:
    """Release form: EMA weights in fp16, no optimizer / training state; written atomically in place."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("optimizer", "model_state", "rng", "updates", "scaler"):
        ckpt.pop(key, None)
    ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    ckpt["epoch"] = -1
    save_checkpoint(path, ckpt)
