"""Read Ultralytics-format checkpoints (`*.pt`) without executing anything they contain.

An Ultralytics checkpoint is a `torch.save` zip whose `data.pkl` pickles whole module objects
(`ultralytics.nn.tasks.SegmentationModel`, `torch.nn.modules.conv.Conv2d`, ...). Unpickling it normally would import
and run those classes. Here a restricted `pickle.Unpickler` admits only an allow-list of globals: tensor/storage
rebuilding (done by our own code from the zip records), a few inert data types (`torch.Size`, `OrderedDict`, `set`,
`datetime`, numpy scalars), and, for any module class, path or namespace, an inert stand-in that only records the
state it was given. Any other global (`os.system`, `builtins.eval`, ...) raises `UnsafeCheckpointError` before
anything is called. The stand-in module tree is then walked to rebuild the state dict in registration order.
"""

from __future__ import annotations

import collections
import datetime
import io
import pickle
import sys
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

__all__ = ["StandIn", "UnsafeCheckpointError", "load_official_checkpoint", "module_state_dict", "to_plain"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of the pre-1.6 (non-zip) torch.save format
_MAX_DEPTH = 64  # module nesting limit; real models are < 10 deep, a cyclic tree would recurse forever

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

# Immutable C types whose constructors only build data; safe to hand to the unpickler as they are.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("builtins", t.__name__): t for t in (set, frozenset, slice, complex, bytearray, list, dict, tuple)},
    **{("builtins", t.__name__): t for t in (int, float, str, bool, bytes)},
    **{("datetime", t.__name__): t for t in (datetime.datetime, datetime.date, datetime.time)},
    **{("datetime", t.__name__): t for t in (datetime.timedelta, datetime.timezone)},
}

_NAMESPACES = {("types", "SimpleNamespace"), ("argparse", "Namespace")}
_MODULE_PREFIXES = ("ultralytics.", "torch.nn.modules.")

_TASK_BY_MODEL = {
    "SegmentationModel": "segment",
    "DetectionModel": "detect",
    "PoseModel": "pose",
    "OBBModel": "obb",
    "ClassificationModel": "classify",
}
_TASK_BY_HEAD = (
    ("Segment", "segment"),
    ("Pose", "pose"),
    ("OBB", "obb"),
    ("Classify", "classify"),
    ("Detect", "detect"),
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global outside the allow-list. Nothing from the file was executed."""


class StandIn:
    """Inert replacement for a class named in a checkpoint: records constructor args and pickled state, nothing else.

    A subclass is made per global for each load; `qualname` is the class the file named ("ultralytics.nn...Conv").
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = super().__new__(cls)
        obj._args, obj._kwargs, obj._state, obj._items = args, kwargs, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Called by REDUCE; `__new__` already recorded the arguments."""

    def __setstate__(self, state: Any) -> None:
        """BUILD: keep the state dict (or `(dict, slots)` pair, or any other value under "__state__")."""
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self._state.update(state)
        else:
            self._state["__state__"] = state

    def append(self, item: Any) -> None:
        """APPEND on a list subclass."""
        self._items.append(item)

    def extend(self, items: Any) -> None:
        """APPENDS on a list subclass."""
        self._items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        """SETITEM on a dict subclass."""
        self._state[key] = value

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"

    @property
    def class_name(self) -> str:
        """The bare class name the file named, e.g. "SegmentationModel"."""
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def is_module(self) -> bool:
        return "_modules" in self._state


class _PathStandIn(StandIn):
    """pathlib.*Path: rebuilt as a string (a WindowsPath cannot be instantiated on Linux)."""

    def __str__(self) -> str:
        pure = PureWindowsPath if "Windows" in self.qualname else PurePosixPath
        return str(pure(*[str(a) for a in self._args]))


class _NamespaceStandIn(StandIn):
    """types.SimpleNamespace and subclasses (ultralytics.utils.IterableSimpleNamespace): rebuilt as a dict."""


class _StorageType:
    """Marker for `torch.FloatStorage` & co.: just the dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError("the file tries to modify a storage type")


class _Storage:
    """A storage read from the zip, as a flat 1-D tensor of its dtype."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat

    def __setstate__(self, state: Any) -> None:
        raise UnsafeCheckpointError("the file tries to modify a storage record")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals from an allow-list and reads storages from a torch zip archive."""

    def __init__(self, file: io.BufferedIOBase, archive: zipfile.ZipFile | None = None, prefix: str = "") -> None:
        super().__init__(file)
        self._archive, self._prefix = archive, prefix
        self._byteorder = self._read_byteorder()
        self._storages: dict[str, _Storage] = {}
        self._classes: dict[str, type] = {}
        self._dtypes = {
            k: v for k, v in vars(torch).items() if isinstance(v, torch.dtype | torch.layout | torch.memory_format)
        }

    def _read_byteorder(self) -> str:
        if self._archive is None or f"{self._prefix}byteorder" not in self._archive.namelist():
            return "little"  # files written before torch recorded it are little-endian
        return self._archive.read(f"{self._prefix}byteorder").decode().strip()

    # -- globals ------------------------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        """Map a global to an allowed object or an inert stand-in; refuse everything else."""
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        found = self._find_special(module, name)
        if found is not None:
            return found
        if module == "pathlib" and name.endswith("Path"):
            return self._stand_in(module, name, _PathStandIn)
        if (module, name) in _NAMESPACES or (module.startswith("ultralytics") and name.endswith("Namespace")):
            return self._stand_in(module, name, _NamespaceStandIn)
        if module == "ultralytics" or module.startswith(_MODULE_PREFIXES) or module == "torch.nn.parameter":
            return self._stand_in(module, name, StandIn)
        raise UnsafeCheckpointError(
            f"it references the global '{module}.{name}', which is not on the allow-list of what a model checkpoint "
            "may contain (module classes, tensors, plain data). Nothing from the file was executed."
        )

    def _find_special(self, module: str, name: str) -> Any:
        """Tensor/storage rebuilding, torch dtypes, numpy and protocol-2 helpers, as bound methods of this loader."""
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in self._dtypes:
            return self._dtypes[name]
        table = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch._tensor", "_rebuild_from_type_v2"): self._rebuild_from_type_v2,
            ("_codecs", "encode"): self._codecs_encode,
            ("copyreg", "_reconstructor"): self._reconstructor,
        }
        if (module, name) in table:
            return table[(module, name)]
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
            return self._find_numpy(name)
        if module == "torch" and name == "Tensor":
            return self._stand_in(module, name, StandIn)  # only ever a type marker in _rebuild_from_type_v2
        return None

    def _find_numpy(self, name: str) -> Any:
        import numpy as np  # only needed for checkpoints that hold numpy values

        table = {"dtype": np.dtype, "ndarray": np.ndarray, "scalar": self._np_scalar, "_reconstruct": self._np_array}
        return table.get(name)

    def _stand_in(self, module: str, name: str, base: type) -> type:
        qualname = f"{module}.{name}"
        if qualname not in self._classes:
            self._classes[qualname] = type(name, (base,), {"qualname": qualname, "__module__": __name__})
        return self._classes[qualname]

    # -- tensors ------------------------------------------------------------------------------------------------
    def persistent_load(self, pid: Any) -> _Storage:
        """Read storage `pid = ("storage", StorageType, key, location, numel)` from `<archive>/data/<key>`."""
        if self._archive is None:
            raise ValueError("it is in the legacy (pre torch 1.6) format; re-save it with a recent torch")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unknown persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"storage {key} has no storage type")
        if key not in self._storages:
            self._storages[key] = _Storage(self._read_storage(key, storage_type.dtype, int(numel)))
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        data = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if dtype != torch.uint8 and len(data) != numel * itemsize:
            raise ValueError(f"storage {key} holds {len(data)} bytes, expected {numel} x {itemsize}")
        if not data:
            return torch.empty(0, dtype=dtype)
        flat = torch.frombuffer(data, dtype=torch.uint8)
        if self._byteorder != sys.byteorder and itemsize > 1:
            flat = flat.view(-1, itemsize).flip(1).contiguous().view(-1)  # swap the bytes of every element
        return flat.view(dtype)

    def _rebuild_tensor_v2(
        self, storage: Any, offset: int, size: Any, stride: Any, *_ignored: Any, **_kw: Any
    ) -> torch.Tensor:
        """Tensor view `(size, stride, offset)` of a storage; requires_grad and hooks are ignored."""
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError("a tensor is rebuilt from something that is not a storage record")
        return storage.flat.as_strided(tuple(size), tuple(stride), int(offset))

    def _rebuild_parameter(self, data: Any, *_ignored: Any) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise UnsafeCheckpointError("a parameter is rebuilt from something that is not a tensor")
        return data

    def _rebuild_from_type_v2(self, func: Any, _new_type: Any, args: Any, _state: Any) -> torch.Tensor:
        if func not in (self._rebuild_tensor_v2, self._rebuild_parameter):
            raise UnsafeCheckpointError("a tensor subclass is rebuilt by a function that is not a tensor rebuilder")
        return func(*args)

    # -- helpers for protocol 2 and numpy -----------------------------------------------------------------------
    def _codecs_encode(self, text: Any, encoding: str = "utf-8") -> bytes:
        """Protocol 2 writes bytes as `_codecs.encode(str, "latin1")`; only that is allowed."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafeCheckpointError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
        return text.encode("latin1")

    def _reconstructor(self, cls: Any, base: Any, state: Any = None) -> StandIn:
        """copyreg._reconstructor (protocols 0/1), for stand-in classes only."""
        if not (isinstance(cls, type) and issubclass(cls, StandIn)):
            raise UnsafeCheckpointError(f"copyreg._reconstructor called for {cls!r:.80}")
        obj = cls()
        if state is not None:
            obj.__setstate__(state)
        return obj

    def _np_scalar(self, dtype: Any, data: Any = None) -> Any:
        """numpy scalar from raw bytes, returned as the equivalent Python value."""
        import numpy as np

        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes | bytearray):
            raise UnsafeCheckpointError(f"numpy scalar of dtype {dtype!r:.40} is not plain data")
        return np.frombuffer(bytes(data), dtype=dtype, count=1)[0].item()

    def _np_array(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        """numpy ndarray shell; its contents arrive in BUILD (elements of object arrays were unpickled by us)."""
        import numpy as np

        if subtype is not np.ndarray:
            raise UnsafeCheckpointError(f"numpy array of type {subtype!r:.40}")
        return np.ndarray.__new__(np.ndarray, shape, dtype)


# -- reading -------------------------------------------------------------------------------------------------------
def _unpickle(path: Path) -> Any:
    """The top-level object of a torch zip checkpoint (or a plain pickle), through the restricted unpickler."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f).load()
        if isinstance(obj, int) and obj == _LEGACY_MAGIC:
            raise ValueError("it is in the legacy (pre torch 1.6) format; re-save it with a recent torch")
        return obj
    with zipfile.ZipFile(path) as archive:
        records = [n for n in archive.namelist() if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if not records:
            raise ValueError("it is a zip file without data.pkl, not a torch checkpoint")
        prefix = records[0][: -len("data.pkl")]
        with archive.open(records[0]) as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), archive, prefix).load()


def _read_checkpoint(path: Path) -> Any:
    """`_unpickle` with errors that name the file."""
    try:
        return _unpickle(path)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"Refusing to load {path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, IndexError) as e:
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated download?): {e}") from e
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} could not be read as an Ultralytics checkpoint: {e}") from e


# -- the stand-in tree -> plain data ---------------------------------------------------------------------------------
def module_state_dict(module: StandIn, dtype: torch.dtype | None = torch.float32) -> dict[str, torch.Tensor]:
    """The state dict of a stand-in module tree, with the names and order `nn.Module.state_dict()` would give.

    Per module: parameters, then persistent buffers, then children (recursively, prefix "child."). Floating tensors
    are cast to `dtype` (None keeps them as stored, e.g. fp16); every tensor is a fresh contiguous copy.
    """
    out: dict[str, torch.Tensor] = {}
    _collect(module, "", out, dtype, 0)
    return out


def _collect(module: StandIn, prefix: str, out: dict[str, torch.Tensor], dtype: torch.dtype | None, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"module tree deeper than {_MAX_DEPTH} at {prefix!r} (cyclic?)")
    state = module._state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    entries = list((state.get("_parameters") or {}).items())
    entries += [(k, v) for k, v in (state.get("_buffers") or {}).items() if k not in non_persistent]
    for name, tensor in entries:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        cast = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
        out[prefix + name] = cast.clone(memory_format=torch.contiguous_format)
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not (isinstance(child, StandIn) and child.is_module):
            raise ValueError(f"{prefix}{name} is not a module")
        _collect(child, f"{prefix}{name}.", out, dtype, depth + 1)


def to_plain(obj: Any) -> Any:
    """Turn stand-ins and exotic values into plain Python data (dicts, lists, str, numbers).

    Paths -> str, namespaces -> dict, other stand-ins -> their class name, tensors/numpy -> lists or numbers,
    datetime -> ISO string, torch.device/dtype -> str.
    """
    if isinstance(obj, _PathStandIn):
        return str(obj)
    if isinstance(obj, _NamespaceStandIn):
        return {str(k): to_plain(v) for k, v in {**obj._kwargs, **obj._state}.items()}
    if isinstance(obj, StandIn):
        return obj.qualname
    if isinstance(obj, dict):
        return {to_plain(k) if isinstance(k, tuple) else k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = [to_plain(v) for v in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, torch.device | torch.dtype | datetime.timedelta):
        return str(obj)
    if type(obj).__module__.startswith("numpy"):
        return obj.tolist() if hasattr(obj, "tolist") else str(obj)
    return obj


def _names(model: StandIn) -> dict[int, str]:
    names = model._state.get("names")
    if names is None:
        names = (model._state.get("yaml") or {}).get("names")
    if isinstance(names, list | tuple):
        names = dict(enumerate(names))
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    nc = int((model._state.get("yaml") or {}).get("nc") or 0)
    return {i: f"class{i}" for i in range(nc)}


def _head(model: StandIn) -> StandIn | None:
    layers = model._state.get("_modules", {}).get("model")
    if isinstance(layers, StandIn) and layers._state.get("_modules"):
        return list(layers._state["_modules"].values())[-1]
    return None


def _task(model: StandIn, train_args: dict[str, Any]) -> str:
    """Task from the model class, else the head class, else the train args; "detect" if nothing says."""
    if model.class_name in _TASK_BY_MODEL:
        return _TASK_BY_MODEL[model.class_name]
    head = _head(model)
    for key, task in _TASK_BY_HEAD:
        if isinstance(head, StandIn) and key in head.class_name:
            return task
    return str(train_args.get("task") or "detect")


def _stride(model: StandIn) -> list[float] | None:
    stride = model._state.get("stride")
    if stride is None:
        return None
    return [float(s) for s in (stride.flatten().tolist() if isinstance(stride, torch.Tensor) else stride)]


def _pick_model(raw: Any) -> tuple[dict[str, Any], StandIn]:
    """(checkpoint dict, model stand-in): "model" unless it is None, else "ema"; a bare pickled module works too."""
    ckpt = {"model": raw} if isinstance(raw, StandIn) else raw
    if not isinstance(ckpt, dict):
        raise ValueError(f"it holds a {type(raw).__name__}, not a checkpoint dict")
    model = ckpt.get("model") if ckpt.get("model") is not None else ckpt.get("ema")
    if model is None:
        raise ValueError(f"it holds no model (keys: {sorted(map(str, ckpt))})")
    if not (isinstance(model, StandIn) and model.is_module):
        raise ValueError(f"its model is a {type(model).__name__}, not a pickled module")
    return ckpt, model


def load_official_checkpoint(path: str | Path, dtype: torch.dtype | None = torch.float32) -> dict[str, Any]:
    """Load an Ultralytics `.pt` checkpoint (e.g. official `yolo11n-seg.pt` or a user's `best.pt`) safely.

    Args:
        path: the checkpoint file.
        dtype: floating tensors are cast to this dtype (default float32); None keeps them as stored (fp16).

    Returns:
        dict with `format` ("ultralytics"), `state_dict` ({name: tensor}, the module's names and order),
        `yaml` (architecture config dict), `names` ({int: str}), `task`, `train_args` (plain dict), `stride`
        (list of floats or None), `epoch`, `best_fitness`, `date`, `version`, `metrics` (dict, may be empty).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file references a global outside the allow-list (nothing was executed).
        ValueError: not a readable torch checkpoint, or no model inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    raw = _read_checkpoint(path)
    try:
        ckpt, model = _pick_model(raw)
        state_dict = module_state_dict(model, dtype)
    except ValueError as e:
        raise ValueError(f"{path} is not a usable Ultralytics checkpoint: {e}") from e
    model_args = to_plain(model._state.get("args"))
    train_args = {**(model_args if isinstance(model_args, dict) else {})}
    file_args = to_plain(ckpt.get("train_args"))
    train_args.update(file_args if isinstance(file_args, dict) else {})
    metrics = to_plain(ckpt.get("train_metrics") or ckpt.get("metrics") or {})
    return {
        "format": "ultralytics",
        "state_dict": state_dict,
        "yaml": to_plain(model._state.get("yaml") or {}),
        "names": _names(model),
        "task": _task(model, train_args),
        "train_args": train_args,
        "stride": _stride(model),
        "epoch": to_plain(ckpt.get("epoch")),
        "best_fitness": to_plain(ckpt.get("best_fitness")),
        "date": to_plain(ckpt.get("date")),
        "version": to_plain(ckpt.get("version")),
        "metrics": metrics if isinstance(metrics, dict) else {},
    }
