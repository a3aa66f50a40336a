"""What every exporter shares: the typed export settings, the model to trace, metadata, atomic folder writes."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.inference import inference_copy
from ..utils.torch_utils import check_imgsz, select_device


@dataclass(frozen=True)
class ExportConfig:
    """The export arguments, typed and checked; built from the flat user config with `from_args`."""

    imgsz: tuple[int, int] = (640, 640)
    batch: int = 1
    dynamic: bool = False
    half: bool = False
    int8: bool = False
    opset: int | None = None
    simplify: bool = True
    nms: bool = False
    masks: bool = False
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    agnostic_nms: bool = False
    device: str = "cpu"
    data: str | None = None
    fraction: float = 1.0
    ov_precision: str | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any], stride: int = 32) -> ExportConfig:
        """Read the export keys of a flat config dict (unknown keys are ignored, None means the default)."""

        def get(key: str, default: Any) -> Any:
            value = args.get(key)
            return default if value is None else value

        masks = bool(get("masks", False))
        conf = args.get("conf")
        return cls(
            imgsz=check_imgsz(get("imgsz", 640), stride),
            batch=max(int(get("batch", 1)), 1),
            dynamic=bool(get("dynamic", False)),
            half=bool(get("half", False)),
            int8=bool(get("int8", False)),
            opset=None if args.get("opset") in (None, 0) else int(args["opset"]),
            simplify=bool(get("simplify", True)),
            nms=bool(get("nms", False)) or masks,  # in-graph masks need the in-graph NMS first
            masks=masks,
            conf=0.25 if conf is None else float(conf),
            iou=float(get("iou", 0.7)),
            max_det=int(get("max_det", 300)),
            agnostic_nms=bool(get("agnostic_nms", False)),
            device=str(get("device", "cpu")),
            data=args.get("data"),
            fraction=float(get("fraction", 1.0)),
            ov_precision=args.get("ov_precision"),
        )

    def to_metadata_args(self) -> dict[str, Any]:
        """The settings worth recording in the exported file."""
        d = asdict(self)
        d.pop("device")
        d.pop("data")
        d.pop("ov_precision")
        d["imgsz"] = list(self.imgsz)
        return d


def export_device(device: str | None) -> torch.device:
    """'cpu' / '0' / 'cuda:0' / None (CPU: exports are traced on CPU unless a GPU is named)."""
    text = "" if device is None else str(device).strip().lower()
    return torch.device("cpu") if text in ("", "none") else select_device(text)


def prepare_model(model: nn.Module, device: torch.device, half: bool = False) -> nn.Module:
    """A fused, frozen, eval-mode copy of `model` on `device` (fp16 when `half`); the caller's model is untouched."""
    return inference_copy(model, device, torch.float16 if half else torch.float32, channels_last=False, inplace=False)


def max_stride(model: nn.Module) -> int:
    stride = getattr(model, "stride", 32)
    return int(max(stride.tolist())) if isinstance(stride, torch.Tensor) else int(stride)


def yoloseg_version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        return version("yoloseg")
    except Exception:
        return "0.0.0"


def build_metadata(model: nn.Module, cfg: ExportConfig) -> dict[str, Any]:
    """What a loader needs to use an exported file: names, stride, imgsz, task, batch, flags (plain Python values)."""
    yaml_cfg = getattr(model, "yaml", {}) or {}
    name = Path(str(yaml_cfg.get("yaml_file", "yolo"))).stem.replace("yolo", "YOLO")
    task = getattr(model, "task", "segment")
    train_data = (getattr(model, "args", {}) or {}).get("data")
    return {
        "description": f"yoloseg {name} model" + (f" trained on {train_data}" if train_data else ""),
        "author": "yoloseg",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "version": yoloseg_version(),
        "license": "Apache-2.0",
        "stride": max_stride(model),
        "task": task,
        "batch": cfg.batch,
        "imgsz": list(cfg.imgsz),
        "names": {int(k): str(v) for k, v in dict(getattr(model, "names", {})).items()},
        "args": cfg.to_metadata_args(),
        "channels": int(yaml_cfg.get("channels", 3)),
        "dynamic": cfg.dynamic,
        "half": cfg.half,
        "int8": cfg.int8,
        "end2end": cfg.nms,
        "nms": cfg.nms,
        "masks": cfg.masks,
    }


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence the tracer's and the legacy exporter's warnings about constants (shapes stay symbolic where needed)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an old folder is removed), on error
    it is deleted. Readers never see a half-written folder at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def umask_permissions(path: str | Path) -> None:
    """Give an exported file or folder (and everything in it) the usual permissions (0666 / 0777 less the umask):
    temporary files are created 0600 / 0700."""
    mask = os.umask(0)
    os.umask(mask)
    path = Path(path)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def file_size_mb(path: str | Path) -> float:
    """Size of a file, or of every file under a folder, in MB (1e6 bytes)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    return path.stat().st_size / 1e6
