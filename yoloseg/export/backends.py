"""Run exported models like the PyTorch model: `load_backend(path)` -> a callable with the model's attributes.

`backend(im)` takes (B, 3, H, W) float RGB in [0, 1] (a torch tensor) and returns torch tensors on the backend's
device, in the export's output order: (y (B, 4 + nc + 32, A), protos (B, 32, H/4, W/4)) for a plain segment export,
(y, None) for detect, (dets (B, max_det, 6 + 32), protos) for nms=True, (boxes, scores, classes, masks) for
masks=True. Metadata restores names, stride, imgsz, task, batch and dynamic.

Static exports accept smaller inputs: the batch is padded with zero images (their outputs dropped), and H and W with
grey (114) at the bottom and right, with the prototype / mask outputs cropped back; coordinates stay valid. A larger
batch runs in chunks; a larger image is an error (letterbox to the export imgsz, or export with dynamic=True).
A `reshapeable` backend (yoloseg's static OpenVINO exports) runs a smaller H x W as it is, reshaped to it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..utils.log import LOGGER
from ..utils.torch_utils import restricted_cpus

PAD_VALUE = 114 / 255
OV_PRECISIONS = {"fp32": "f32", "f32": "f32", "bf16": "bf16", "fp16": "f16", "f16": "f16"}


def _literal(value: Any) -> Any:
    """Metadata values written as str(): back to Python values where they parse, else the string."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        try:
            return json.loads(value)
        except ValueError:
            return value


def normalize_metadata(raw: dict[str, Any]) -> dict[str, Any]:
    """Parse string values and fix types: names {int: str}, imgsz [h, w], stride/batch int, flags bool."""
    meta = {k: _literal(v) for k, v in raw.items()}
    names = meta.get("names") or {}
    if isinstance(names, list):
        names = dict(enumerate(names))
    meta["names"] = {int(k): str(v) for k, v in names.items()}
    imgsz = meta.get("imgsz")
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    meta["imgsz"] = [int(s) for s in imgsz] if imgsz else None
    args = meta.get("args") if isinstance(meta.get("args"), dict) else {}
    meta["args"] = args
    meta["stride"] = int(meta.get("stride", 32))
    meta["batch"] = int(meta.get("batch", args.get("batch", 1)) or 1)
    for flag in ("dynamic", "half", "int8", "nms", "masks", "end2end", "reshapeable"):
        meta[flag] = bool(meta.get(flag, args.get(flag, False)))
    meta["end2end"] = meta["end2end"] or meta["nms"]
    meta.setdefault("task", "segment")
    return meta


class Backend:
    """Common front of every exported-model runner (see the module docstring for inputs and outputs)."""

    format = ""

    def __init__(self, path: Path, metadata: dict[str, Any], device: torch.device, fp16: bool):
        meta = normalize_metadata(metadata)
        self.path = path
        self.metadata = meta
        self.device = device
        self.fp16 = fp16
        self.pt = False
        self.jit = self.format == "torchscript"
        self.names: dict[int, str] = meta["names"]
        self.nc = len(self.names)
        self.stride = meta["stride"]
        self.task = meta["task"]
        self.batch = meta["batch"]
        self.dynamic = meta["dynamic"]
        self.imgsz = tuple(meta["imgsz"] or (640, 640))
        self.end2end = meta["end2end"]
        self.nms = meta["nms"]
        self.masks = meta["masks"]
        self.channels = int(meta.get("channels", 3))
        # static, but runs any input up to its size without padding (the predictor then letterboxes minimally)
        self.reshapeable = False

    def _run(self, im: torch.Tensor) -> list[torch.Tensor]:
        """(b, 3, h, w) at the backend's expected batch/size -> the raw outputs."""
        raise NotImplementedError

    def set_precision(self, precision: str) -> None:
        """The precision predict / val's `half=` asks for ('fp32', 'bf16' or 'fp16', from inference_precision).
        Only OpenVINO chooses at run time; the others run the precision their file was exported in."""

    def __call__(self, im: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if im.ndim != 4:
            raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(im.shape)}")
        im = im.float()
        if self.dynamic:
            outs = self._run(im)
        else:
            outs = self._run_static(im)
        outs = [(o.float() if o.dtype == torch.float16 else o).to(self.device) for o in outs]
        if len(outs) == 1:
            outs.append(None)
        return tuple(outs)

    def _run_static(self, im: torch.Tensor) -> list[torch.Tensor]:
        b, _, h, w = im.shape
        eh, ew = self.imgsz
        if h > eh or w > ew:
            raise ValueError(
                f"{self.path.name} was exported for imgsz={list(self.imgsz)} (static); got an input of {h}x{w}. "
                f"Letterbox to {eh}x{ew}, or export with dynamic=True"
            )
        pad = (h, w) != (eh, ew) and not self.reshapeable
        if pad:
            im = F.pad(im, (0, ew - w, 0, eh - h), value=PAD_VALUE)
        chunks = []
        for i in range(0, b, self.batch):
            x = im[i : i + self.batch]
            n = x.shape[0]
            if n < self.batch:  # pad with zero images, drop their outputs
                x = torch.cat((x, x.new_zeros(self.batch - n, *x.shape[1:])))
            chunks.append([o[:n] for o in self._run(x)])
        outs = [torch.cat(parts) for parts in zip(*chunks)]
        if pad:
            outs = [self._crop(o, h, w) for o in outs]
        return outs

    def _crop(self, out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Crop spatial outputs (protos at 1/4, masks at 1/1 of the input) back to the unpadded input."""
        if out.ndim != 4:
            return out
        eh = self.imgsz[0]
        scale = out.shape[2] / eh
        return out[:, :, : round(h * scale), : round(w * scale)]

    def warmup(self, imgsz: tuple[int, int, int, int] | None = None) -> None:
        """One inference on zeros (the export's input shape by default)."""
        shape = imgsz or (self.batch, self.channels, *self.imgsz)
        self(torch.zeros(shape, device=self.device))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path}, task={self.task}, imgsz={list(self.imgsz)}, batch={self.batch}, "
            f"dynamic={self.dynamic}, nms={self.nms}, masks={self.masks})"
        )


class TorchScriptBackend(Backend):
    format = "torchscript"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        extra = {"config.txt": ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit is deprecated, still works
            self.model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        self.model.eval()
        metadata = json.loads(extra["config.txt"]) if extra["config.txt"] else {}
        params = list(self.model.parameters())
        half = bool(params) and params[0].dtype == torch.float16
        if fp16 and device.type == "cuda" and not half:
            self.model.half()
            half = True
        super().__init__(path, metadata, device, half)

    def _run(self, im: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.model(im.to(self.device, torch.float16 if self.fp16 else torch.float32))
        return list(out) if isinstance(out, (tuple, list)) else [out]


class OnnxBackend(Backend):
    format = "onnx"

    def __init__(self, path: Path, device: torch.device, fp16: bool = False):
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        elif device.type == "cuda":
            device = torch.device("cpu")  # onnxruntime without CUDA: run on CPU, return CPU tensors
        options = ort.SessionOptions()
        if (pinned := restricted_cpus()) is not None:
            options.intra_op_num_threads = pinned
        # idle pool threads would otherwise spin after each run on the cores that the predictor's pre- and
        # postprocessing need next (bus.jpg on 2 cores: pre + post 11 -> 6 ms, end to end 136 -> 123 ms)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        super().__init__(path, metadata, device, inp.type == "tensor(float16)")
        self._static_from_shape(inp.shape)

    def _static_from_shape(self, shape: list) -> None:
        """The input shape is the truth for static files (metadata may be missing or from another tool)."""
        if all(isinstance(s, int) for s in shape):
            self.dynamic = False
            self.batch, self.imgsz = shape[0], (shape[2], shape[3])
        else:
            self.dynamic = True

    def _run(self, im: torch.Tensor) -> list[torch.Tensor]:
        x = im.detach().cpu().numpy().astype(np.float16 if self.fp16 else np.float32)
        return [torch.from_numpy(o) for o in self.session.run(self.output_names, {self.input_name: x})]


class _ReshapeFailed(Exception):
    """An OpenVINO model could not be reshaped / compiled for an input shape."""


@functools.cache
def openvino_core() -> Any:
    """The process's one `openvino.Core`, made on first use.

    One Core, not one per model: OpenVINO's CPU plugin (2026.4) points the compiling thread's signal stack
    (sigaltstack) at a buffer of its Core and puts the previous one back when that Core is destroyed. Cores destroyed
    in creation order left the thread's signal stack pointing at freed memory, and the next signal with a Python
    handler (a child process exiting under a DataLoader's SIGCHLD handler) killed the process with SIGSEGV.
    """
    import openvino as ov

    return ov.Core()


class OpenVINOBackend(Backend):
    """An OpenVINO IR on the CPU plugin. A static IR exported by yoloseg (`reshapeable` in its metadata) is compiled
    for each input shape when first met, the declared one included (so a one-off prediction at another shape compiles
    once), keeping the MAX_SHAPES most recent other shapes; other IRs are compiled once, at load."""

    format = "openvino"
    MAX_SHAPES = 8

    def __init__(self, path: Path, device: torch.device, fp16: bool = False, ov_precision: str | None = "fp32"):
        folder = path if path.is_dir() else path.parent
        xml = path if path.suffix == ".xml" else next(iter(sorted(folder.glob("*.xml"))), None)
        if xml is None:
            raise FileNotFoundError(f"{folder}: no OpenVINO .xml model in this folder")
        meta_file = folder / "metadata.yaml"
        metadata = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
        core = openvino_core()
        model = core.read_model(str(xml))
        config: dict[str, str] = {"PERFORMANCE_HINT": "LATENCY"}
        if (pinned := restricted_cpus()) is not None:
            config["INFERENCE_NUM_THREADS"] = str(pinned)
        if ov_precision not in (None, "", "auto"):
            if ov_precision not in OV_PRECISIONS:
                raise ValueError(f"ov_precision={ov_precision!r}: use one of {', '.join(OV_PRECISIONS)} or 'auto'")
            config["INFERENCE_PRECISION_HINT"] = OV_PRECISIONS[ov_precision]
        super().__init__(xml, metadata, torch.device("cpu"), False)
        self.core, self.config, self.ov_model = core, config, model
        self.opened_config = dict(config)  # what set_precision('fp32') returns to
        self.set_aside: dict[frozenset, tuple[Any, dict]] = {}  # another precision's compiled models (set_precision)
        self.by_shape: dict[tuple[int, ...], Any] = {}
        shape = model.inputs[0].get_partial_shape()
        if shape.is_static:
            dims = [d.get_length() for d in shape]
            self.dynamic, self.batch, self.imgsz = False, dims[0], (dims[2], dims[3])
            self.reshapeable = bool(self.metadata["reshapeable"]) and self._reshape_check(dims)
        else:
            self.dynamic = True
        self.compiled = None if self.reshapeable else core.compile_model(model, "CPU", config)
        self.device = device if device.type == "cpu" else torch.device("cpu")

    def _reshaped(self, shape: list[int]) -> Any:
        """A copy of the model for input `shape` (B, C, H, W), shape inference done (no compilation yet)."""
        import openvino as ov

        model = self.ov_model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        return model

    def _reshape_check(self, dims: list[int]) -> bool:
        """Whether the graph really takes another size."""
        try:
            self._reshaped([dims[0], dims[1], max(dims[2] - 32, 32), dims[3]])
        except Exception:  # noqa: BLE001 - any failure: run it as a plain static model
            return False
        return True

    def _run_static(self, im: torch.Tensor) -> list[torch.Tensor]:
        try:
            return super()._run_static(im)
        except _ReshapeFailed:  # reshapeable is off now: padded to the declared shape instead
            return super()._run_static(im)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile for inputs of `shape` (B, C, H, W) now, if new (the predictor calls it before its timed stages).
        Inputs run in chunks of the export's static batch, so that is the batch compiled for."""
        if self.dynamic:
            return
        try:
            self._compiled_for((self.batch, *shape[1:]))
        except _ReshapeFailed:
            pass  # warned; the run pads instead

    def set_precision(self, precision: str) -> None:
        """'bf16' (half=True on a CPU with bf16 hardware, as PyTorch runs it) sets the bf16 inference precision hint;
        'fp32' / 'fp16' keep the precision this backend was opened with (fp16 has no CPU plugin path here). The
        models compiled for the other precision are kept aside, so switching back and forth compiles nothing again."""
        config = dict(self.opened_config)
        if precision == "bf16":
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        if config != self.config:
            self.set_aside[frozenset(self.config.items())] = (self.compiled, self.by_shape)
            self.compiled, self.by_shape = self.set_aside.pop(frozenset(config.items()), (None, {}))
            self.config = config
            if not self.reshapeable:  # compiled now, as at load, not within the first timed inference
                self._declared_compiled()

    def _declared_compiled(self) -> Any:
        if self.compiled is None:
            self.compiled = self.core.compile_model(self.ov_model, "CPU", self.config)
        return self.compiled

    def _compiled_for(self, shape: tuple[int, ...]) -> Any:
        """The model compiled for input `shape` (B, C, H, W): the declared one, or a reshaped copy (cached)."""
        key = tuple(shape[2:])
        if self.dynamic or not self.reshapeable or key == tuple(self.imgsz):
            return self._declared_compiled()
        compiled = self.by_shape.pop(key, None)
        if compiled is None:
            try:
                compiled = self.core.compile_model(self._reshaped(list(shape)), "CPU", self.config)
            except Exception as e:  # noqa: BLE001 - a shape this graph cannot take
                LOGGER.warning(f"WARNING: {self.path.name}: no model for input {list(shape)} ({e}); padding inputs")
                self.reshapeable = False
                raise _ReshapeFailed from e
        self.by_shape[key] = compiled  # most recent last
        while len(self.by_shape) > self.MAX_SHAPES:
            del self.by_shape[next(iter(self.by_shape))]
        return compiled

    def _run(self, im: torch.Tensor) -> list[torch.Tensor]:
        x = im.detach().cpu().numpy().astype(np.float32)
        compiled = self._compiled_for(x.shape)
        result = compiled(x)
        return [torch.from_numpy(np.asarray(result[port])) for port in compiled.outputs]


def _require(module: str, fmt: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"running a {fmt} model needs {module}: pip install 'yoloseg[export]' (or pip install {module})"
        )


def _as_device(device: str | int | torch.device | None) -> torch.device:
    """'cpu' / None -> cpu; 0, '0', 'cuda', 'cuda:1' -> that CUDA device."""
    if isinstance(device, torch.device):
        return device
    text = "cpu" if device is None else str(device).strip().lower()
    if text.isdigit():
        return torch.device(f"cuda:{text}")
    return torch.device(text or "cpu")


def backend_kind(path: str | Path) -> str | None:
    """'torchscript' / 'onnx' / 'openvino' from a path's suffix or folder, None for anything else."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".torchscript"):
        return "torchscript"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith("_openvino_model") or p.suffix.lower() == ".xml" or (p.is_dir() and any(p.glob("*.xml"))):
        return "openvino"
    return None


def load_backend(
    path: str | Path, device: str | torch.device = "cpu", fp16: bool = False, ov_precision: str | None = "fp32"
) -> Backend:
    """Open an exported model by its suffix or folder: .torchscript, .onnx, <stem>_openvino_model/ (or its .xml).

    Args:
        device: 'cpu' or a CUDA device; ONNX uses the CUDA provider when onnxruntime has it, OpenVINO runs on CPU.
        fp16: run a TorchScript model in half precision on CUDA (ONNX/OpenVINO precision comes from the file).
        ov_precision: OpenVINO CPU inference precision hint; 'fp32' (default, matches PyTorch; AMX CPUs would
            otherwise run bf16), 'bf16', 'fp16' or 'auto' (the device's default).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    device = _as_device(device)
    kind = backend_kind(path)
    if kind == "torchscript":
        return TorchScriptBackend(path, device, fp16)
    if kind == "onnx":
        _require("onnxruntime", "ONNX")
        return OnnxBackend(path, device, fp16)
    if kind == "openvino":
        _require("openvino", "OpenVINO")
        return OpenVINOBackend(path, device, fp16, ov_precision)
    raise ValueError(
        f"{path}: not a model yoloseg can run; use a .pt checkpoint or an export: .torchscript, .onnx, "
        "<name>_openvino_model/"
    )
