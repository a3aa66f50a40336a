"""The `YOLO` facade users know from the guide: build / load a model, then train, val, predict, export.

Methods only resolve arguments and delegate to `engine/*` and `export/*`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config.defaults import get_config
from .nn.graph import YOLOModel
from .utils.log import log

EXPORTED_SUFFIXES = (".onnx", ".torchscript", ".xml")
# Train args a checkpoint remembers and val/predict/export reuse when not given ("the model keeps its data").
REMEMBERED_ARGS = ("imgsz", "data", "task", "single_cls")
CALLBACK_EVENTS = (
    "on_pretrain_routine_start",
    "on_pretrain_routine_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_fit_epoch_end",
    "on_model_save",
    "on_train_end",
    "on_val_start",
    "on_val_end",
    "on_predict_start",
    "on_predict_end",
    "on_export_start",
    "on_export_end",
)


def _is_exported(path: str) -> bool:
    p = Path(path)
    return p.suffix in EXPORTED_SUFFIXES or p.name.endswith("_openvino_model") or (p.is_dir() and any(p.glob("*.xml")))


class YOLO:
    """A YOLO11 / YOLOv8 detection or segmentation model.

    `YOLO("yolo11n-seg.yaml")` builds a fresh model, `YOLO("yolo11n-seg.pt")` (or any `best.pt`, ours or an
    Ultralytics one) loads weights, downloading official names on first use; `YOLO("model.onnx")` and other exported
    files run predict / val through their runtime.
    """

    def __init__(self, model: str | Path = "yolo11n-seg.pt", task: str | None = None, verbose: bool = False):
        self.model: nn.Module | None = None
        self.backend = None  # an exported-model runtime (predict / val only)
        self.ckpt: dict[str, Any] = {}
        self.ckpt_path: str | None = None
        self.overrides: dict[str, Any] = {}
        self.callbacks: dict[str, list[Callable]] = {e: [] for e in CALLBACK_EVENTS}
        self.predictor = None
        self.trainer = None
        self.metrics = None
        model = str(model).strip()
        if Path(model).suffix in (".yaml", ".yml"):
            self._new(model, task, verbose)
        elif _is_exported(model):
            self._load_exported(model, task)
        else:
            self._load(model, task)

    # ---------------------------------------------------------------------------------------------------- loading
    def _new(self, cfg: str, task: str | None, verbose: bool) -> None:
        self.model = YOLOModel(cfg)
        self.cfg = cfg
        self.task = self.model.task
        self.overrides = {"model": cfg, "task": self.task}
        if task and task != self.task:
            log.warning(f"WARNING: task={task} conflicts with the model's task '{self.task}'; using '{self.task}'.")
        if verbose:
            self.info()

    def _load(self, weights: str, task: str | None) -> None:
        from .nn.checkpoint import load_checkpoint
        from .utils.weights import resolve_weights

        path = resolve_weights(weights)
        ckpt = load_checkpoint(path)
        self.predictor = None  # a cached predictor holds a fused copy of the previous weights
        self.model = model_from_checkpoint(ckpt)
        self.ckpt, self.ckpt_path = ckpt, str(path)
        self.task = self.model.task
        self.cfg = None
        args = ckpt.get("train_args") or {}
        self.overrides = {k: args[k] for k in REMEMBERED_ARGS if args.get(k) is not None}
        self.overrides.update(model=str(path), task=self.task)
        if task and task != self.task:
            log.warning(f"WARNING: task={task} conflicts with the model's task '{self.task}'; using '{self.task}'.")

    def _load_exported(self, path: str, task: str | None) -> None:
        from .export.backends import load_backend

        self.backend = load_backend(path)
        self.ckpt_path = path
        self.task = getattr(self.backend, "task", None) or task or "segment"
        self.overrides = {"model": path, "task": self.task}
        imgsz = getattr(self.backend, "imgsz", None)
        if imgsz is not None:
            self.overrides["imgsz"] = list(imgsz) if isinstance(imgsz, (tuple, list)) else imgsz
        data = getattr(self.backend, "metadata", {}).get("data") if hasattr(self.backend, "metadata") else None
        if data:
            self.overrides["data"] = data

    def _require_pytorch(self, action: str) -> YOLOModel:
        if self.model is None:
            raise TypeError(
                f"model='{self.ckpt_path}' is an exported file; {action} needs a PyTorch model (*.pt or *.yaml). "
                "Exported models can predict and val."
            )
        return self.model

    # ------------------------------------------------------------------------------------------------- properties
    @property
    def names(self) -> dict[int, str]:
        if self.model is not None:
            return self.model.names
        return self.backend.names

    @property
    def device(self) -> torch.device:
        if self.model is not None:
            return next(self.model.parameters()).device
        return torch.device(getattr(self.backend, "device", "cpu"))

    @property
    def model_name(self) -> str:
        return str(self.overrides.get("model", ""))

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: pass through to the nn.Module (model.stride, model.yaml, ...).
        model = self.__dict__.get("model")
        if model is not None and name != "model":
            return getattr(model, name)
        raise AttributeError(f"'YOLO' object has no attribute '{name}'")

    # ---------------------------------------------------------------------------------------------------- modes
    def __call__(self, source: Any = None, stream: bool = False, **kwargs: Any):
        return self.predict(source, stream, **kwargs)

    def predict(self, source: Any = None, stream: bool = False, **kwargs: Any):
        """Run inference; returns a list of Results (a generator with stream=True)."""
        from .engine.predictor import Predictor

        defaults = {"conf": 0.25, "batch": 1, "save": False, "rect": True, "mode": "predict"}
        remembered = {k: v for k, v in self.overrides.items() if k in ("imgsz",)}
        args = get_config({**remembered, **defaults, **kwargs})
        args["task"] = self.task
        if source is None:
            source = args.get("source")
        if source is None:
            raise ValueError("predict needs a source, e.g. model.predict('bus.jpg') or source=path/to/images")
        runner = self.model if self.model is not None else self.backend
        if self.predictor is None or not self.predictor.reusable_for(args, model=runner):
            self.predictor = Predictor(runner, args, callbacks=self.callbacks)
        else:
            self.predictor.update_args(args)
        return self.predictor.predict(source, stream=stream)

    def val(self, **kwargs: Any):
        """Validate on the dataset the model was trained on (or data=...); returns SegmentMetrics."""
        from .engine.validator import run_validation

        defaults = {"rect": True, "batch": 16, "mode": "val"}
        remembered = {k: v for k, v in self.overrides.items() if k in ("imgsz", "data", "single_cls")}
        args = get_config({**remembered, **defaults, **kwargs})
        args["task"] = self.task
        if not args.get("data"):
            args["data"] = "coco8-seg.yaml" if self.task == "segment" else "coco8.yaml"
            log.warning(f"WARNING: data not given and not remembered by the model; using data={args['data']}")
        runner = self.model if self.model is not None else self.backend
        self.metrics = run_validation(runner, args, callbacks=self.callbacks)
        return self.metrics

    def train(self, **kwargs: Any):
        """Train (or resume); afterwards the model is the best checkpoint. Returns the final metrics."""
        from .config.defaults import validate_args
        from .engine.trainer import Trainer

        model = self._require_pytorch("train")
        # resume: the checkpoint's args win; only what was passed explicitly (device, workers) is kept
        args = validate_args(kwargs) if kwargs.get("resume") else get_config(kwargs)
        args["task"] = self.task
        args["mode"] = "train"
        if not args.get("model"):
            args["model"] = self.overrides.get("model")
        from .utils.torch_utils import cuda_device_ids

        gpus = cuda_device_ids(args.get("device"))
        if len(gpus) > 1 and "RANK" not in os.environ:  # relaunch as one process per GPU
            from .engine.distributed import launch

            code = launch({**args, "model": args.get("model") or self.overrides.get("model")}, len(gpus))
            if code != 0:
                raise RuntimeError(f"distributed training failed with exit code {code}")
            return None
        self.trainer = Trainer(args, model=model, ckpt=self.ckpt, callbacks=self.callbacks)
        self.trainer.fit()
        best = self.trainer.best if self.trainer.best.exists() else self.trainer.last
        if best.exists() and self.trainer.is_main:
            self._load(str(best), None)
        self.metrics = self.trainer.metrics
        return self.metrics

    def export(self, **kwargs: Any) -> str:
        """Export to another format (onnx, torchscript, openvino); returns the path written."""
        from .export import export_model

        model = self._require_pytorch("export")
        remembered = {k: v for k, v in self.overrides.items() if k in ("imgsz", "data")}
        args = get_config({**remembered, "batch": 1, "mode": "export", **kwargs})
        weights = Path(self.ckpt_path) if self.ckpt_path else Path(str(self.cfg)).with_suffix(".pt").name
        return str(export_model(model, args, Path(weights), callbacks=self.callbacks))

    def benchmark(self, **kwargs: Any):
        from .utils.benchmarks import benchmark

        self._require_pytorch("benchmark")
        return benchmark(model=self, **kwargs)

    # ----------------------------------------------------------------------------------------------- utilities
    def info(self, detailed: bool = False, verbose: bool = True, imgsz: int = 640):
        from .nn.info import model_info

        result = model_info(self._require_pytorch("info"), detailed=detailed, verbose=verbose, imgsz=imgsz)
        return None if not verbose else result

    def fuse(self, verbose: bool = True, imgsz: int = 640) -> YOLO:
        model = self._require_pytorch("fuse")
        model.eval().fuse()
        if verbose:
            self.info(imgsz=imgsz)
        return self

    def load(self, weights: str | Path | dict | nn.Module = "yolo11n.pt") -> YOLO:
        """Transfer every tensor whose name and shape match from `weights` (a path, checkpoint dict or module)."""
        from .nn.checkpoint import intersect_state_dicts, load_checkpoint
        from .utils.weights import resolve_weights

        model = self._require_pytorch("load")
        if isinstance(weights, nn.Module):
            source = weights.state_dict()
        elif isinstance(weights, dict):
            source = weights.get("state_dict", weights)
        else:
            source = load_checkpoint(resolve_weights(str(weights)))["state_dict"]
        target = model.state_dict()
        matched = intersect_state_dicts(source, target)
        model.load_state_dict(matched, strict=False)
        self.predictor = None
        log.info(f"Transferred {len(matched)}/{len(target)} items from pretrained weights")
        return self

    def save(self, filename: str | Path = "saved_model.pt") -> None:
        from .engine.saving import make_checkpoint
        from .nn.checkpoint import save_checkpoint

        save_checkpoint(filename, make_checkpoint(self._require_pytorch("save"), train_args=self.overrides, half=True))

    def reset_weights(self) -> YOLO:
        model = self._require_pytorch("reset_weights")
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return self

    def add_callback(self, event: str, func: Callable) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown callback event '{event}'; events are {', '.join(CALLBACK_EVENTS)}")
        self.callbacks[event].append(func)

    def clear_callback(self, event: str) -> None:
        self.callbacks[event] = []

    def reset_callbacks(self) -> None:
        self.callbacks = {e: [] for e in CALLBACK_EVENTS}

    def to(self, *args: Any, **kwargs: Any) -> YOLO:
        self._require_pytorch("to").to(*args, **kwargs)
        return self

    def cpu(self) -> YOLO:
        return self.to("cpu")

    def cuda(self, device: int | None = None) -> YOLO:
        return self.to(f"cuda:{device}" if device is not None else "cuda")

    def eval(self) -> YOLO:
        self._require_pytorch("eval").eval()
        return self

    def __repr__(self) -> str:
        return f"YOLO(model={self.model_name!r}, task={self.task!r})"


def model_from_checkpoint(ckpt: dict[str, Any]) -> YOLOModel:
    """Build the architecture a checkpoint describes and load its weights (float32, eval mode)."""
    yaml_cfg = ckpt.get("yaml")
    if not yaml_cfg:
        raise ValueError("checkpoint has no model configuration ('yaml'); cannot rebuild the architecture")
    model = YOLOModel(yaml_cfg, nc=yaml_cfg.get("nc"), ch=int(yaml_cfg.get("channels", yaml_cfg.get("ch", 3)) or 3))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights do not fit its architecture: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    names = ckpt.get("names") or {}
    model.names = {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else dict(enumerate(names))
    model.args = dict(ckpt.get("train_args") or {})
    return model.eval()
