"""Our checkpoint format (a plain dict saved with torch.save, loadable with weights_only=True) and format detection.

A yoloseg checkpoint holds only tensors and plain data: `{"format": "yoloseg", "version", "date", "model_yaml",
"names", "task", "state_dict", "train_args", "epoch", "best_fitness", "metrics", ...}` plus optional resume state
(`optimizer`, `ema`, `updates`, ...). `load_checkpoint` also reads Ultralytics checkpoints through the restricted
unpickler in `nn.official` and returns both in one normalised shape.
"""

from __future__ import annotations

import datetime
import pickle
import types
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from ..utils.files import atomic_path
from .official import UnsafeCheckpointError, load_official_checkpoint

__all__ = [
    "UnsafeCheckpointError",
    "intersect_state_dicts",
    "load_checkpoint",
    "save_checkpoint",
    "to_saveable",
]

FORMAT = "yoloseg"
_PRIMITIVES = (bool, int, float, str, bytes)

# Keys every normalised checkpoint has, with their value when the file lacks them.
_DEFAULTS: dict[str, Any] = {
    "yaml": None,
    "names": {},
    "task": None,
    "train_args": {},
    "epoch": -1,
    "best_fitness": None,
    "metrics": {},
    "version": None,
    "date": None,
    "stride": None,
}


def _package_version() -> str:
    from .. import __version__

    return __version__


def to_saveable(obj: Any, where: str = "ckpt") -> Any:
    """Copy of `obj` made only of what `torch.load(weights_only=True)` reads back: tensors and plain data.

    Converts Path -> str, numpy scalars -> Python numbers, numpy arrays -> tensors, SimpleNamespace -> dict,
    sets -> lists, datetime -> ISO string, torch.device/dtype -> str, torch.Size -> tuple; tensors are detached.

    Raises:
        TypeError: for an nn.Module (save its state_dict()) or any other object, naming where it is (`where`).
    """
    if obj is None or type(obj) in _PRIMITIVES:  # exact types: np.float64 subclasses float but is not weights_only-safe
        return obj
    if isinstance(obj, nn.Module):
        raise TypeError(f"{where} is an nn.Module ({type(obj).__name__}); save its state_dict() instead")
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, torch.Size):
        return tuple(int(s) for s in obj)
    if isinstance(obj, Mapping):
        return {_saveable_key(k, where): to_saveable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        items = [to_saveable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    return _convert_other(obj, where)


def _convert_other(obj: Any, where: str) -> Any:
    """The less common conversions of `to_saveable`."""
    if isinstance(obj, set | frozenset):
        return [to_saveable(v, f"{where}{{}}") for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, types.SimpleNamespace):
        return to_saveable(vars(obj), where)
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, torch.device | torch.dtype | datetime.timedelta):
        return str(obj)
    if type(obj).__module__.startswith("numpy"):
        return _convert_numpy(obj, where)
    for base in _PRIMITIVES:  # subclasses such as IntEnum or str enums
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint may hold only tensors, "
        "numbers, strings, bytes, None, lists, tuples and dicts"
    )


def _convert_numpy(obj: Any, where: str) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{where} is a numpy array of Python objects; convert it to plain data")
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)  # np.dtype and the like


def _saveable_key(key: Any, where: str) -> Any:
    if key is None or type(key) in _PRIMITIVES:
        return key
    if isinstance(key, tuple):
        return tuple(_saveable_key(k, where) for k in key)
    if type(key).__module__.startswith("numpy") and hasattr(key, "item"):
        return key.item()
    raise TypeError(f"{where} has a key of type {type(key).__name__}; keys must be str, numbers or tuples")


def save_checkpoint(path: str | Path, ckpt: Mapping[str, Any]) -> Path:
    """Save `ckpt` atomically as a yoloseg checkpoint; returns the path.

    `ckpt` must hold only tensors and plain data (see `to_saveable`); a "yaml" key is stored as "model_yaml".
    "format", and unless given "version" and "date", are filled in. Readers see the old file or the new one,
    never a half-written file.
    """
    payload = to_saveable(dict(ckpt))
    if "yaml" in payload and "model_yaml" not in payload:
        payload["model_yaml"] = payload.pop("yaml")
    payload["format"] = FORMAT
    payload.setdefault("version", _package_version())
    payload.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat())
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _not_found_message(path: Path) -> str:
    what = "is a directory, not a checkpoint file" if path.is_dir() else "does not exist"
    return (
        f"Checkpoint {path} {what}. Train one (it is written to <run>/weights/best.pt), pass the path of an existing "
        "'.pt' file, or give an official name such as 'yolo11n-seg.pt' to YOLO(...) to download it."
    )


def _cast(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(state_dict)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def _normalise_ours(obj: dict[str, Any], dtype: torch.dtype | None) -> dict[str, Any]:
    out = dict(obj)
    out["yaml"] = out.pop("model_yaml", out.get("yaml"))
    out["state_dict"] = _cast(out.get("state_dict") or {}, dtype)
    for key, default in _DEFAULTS.items():
        out.setdefault(key, default)
    return out


def _normalise_loaded(obj: Any, path: Path, dtype: torch.dtype | None) -> dict[str, Any]:
    """Normalise what torch.load(weights_only=True) returned: our format, or a bare state dict."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _normalise_ours(obj, dtype)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _normalise_ours({"format": "state_dict", "state_dict": obj}, dtype)
    keys = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{path} is neither a yoloseg nor an Ultralytics checkpoint (it holds {keys})")


def load_checkpoint(path: str | Path, dtype: torch.dtype | None = torch.float32) -> dict[str, Any]:
    """Load a yoloseg checkpoint, an Ultralytics one (official or user-trained), or a bare state dict.

    Nothing in the file is executed: ours loads with `torch.load(weights_only=True)`; a file that needs other
    globals goes through the restricted unpickler of `nn.official`.

    Args:
        path: the `.pt` file.
        dtype: floating state-dict tensors are cast to this (default float32); None keeps them as stored.

    Returns:
        dict with `format` ("yoloseg", "ultralytics" or "state_dict"), `state_dict`, `yaml`, `names`, `task`,
        `train_args`, `epoch`, `best_fitness`, `metrics`, `version`, `date`, `stride`, plus any resume state the
        file holds (`optimizer`, `ema`, `updates`, ...).

    Raises:
        FileNotFoundError: the file does not exist (the message says how to get one).
        ValueError: the file is corrupt, truncated or not a checkpoint.
        UnsafeCheckpointError: the file references code outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_not_found_message(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses unknown globals (an Ultralytics checkpoint pickles modules): use our unpickler, which
        # also gives the precise error for a corrupt or malicious file
        official = load_official_checkpoint(path, dtype=dtype)
        return {**_DEFAULTS, **official}
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as e:
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ValueError(
            f"{path} is corrupt or truncated, or not a checkpoint ({reason}); re-create or re-download it"
        ) from e
    return _normalise_loaded(obj, path, dtype)


def intersect_state_dicts(
    src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor], exclude: Iterable[str] = ()
) -> dict[str, torch.Tensor]:
    """Entries of `src` whose name is in `dst` with the same shape, minus names containing any `exclude` substring.

    Used for weight transfer (e.g. a COCO checkpoint into a model with another class count).
    """
    exclude = tuple(exclude)
    return {
        k: v
        for k, v in src.items()
        if k in dst and not any(x in k for x in exclude) and tuple(v.shape) == tuple(dst[k].shape)
    }
