"""Every configuration key: type, default, allowed range and one line of help; validation of user overrides.

One flat configuration is shared by the `yolo` command and the Python API (`model.train(epochs=3)`): the keys and
defaults are those of the incumbent's `default.yaml` (8.4), minus keys that only other tasks (classify, pose, obb)
use, plus `half` / `int8` (precision flags), `crop_masks`, `masks`, `stream` and `jit`.

    validate_args({"epochs": 1e2, "conf": 0.5})  ->  {"epochs": 100, "conf": 0.5}
    get_config({"epochs": 3}, cfg_file="my.yaml")  ->  every key: defaults <- my.yaml <- {"epochs": 3}

Type names used in `Key.type`: "bool", "int" (int-valued floats such as 1e2 are accepted), "float" (ints accepted),
"str", "path" (str or os.PathLike, returned as str), "list[int]", "list", "any".
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..utils.log import log


class ConfigError(ValueError):
    """A configuration value or command-line argument the user has to fix; the message says how."""

    def __init__(self, message: str, key: str | None = None, value: Any = None, suggestions: Iterable[str] = ()):
        super().__init__(message)
        self.key = key
        self.value = value
        self.suggestions = tuple(suggestions)


@dataclass(frozen=True)
class Key:
    """One configuration key.

    type: accepted kinds in order of preference, e.g. ("int", "list[int]") for imgsz.
    min / max: inclusive bounds for numbers and for the items of int lists; `min_open` makes `min` exclusive.
    choices: allowed strings (matched case-insensitively, returned in the spelling given here).
    nullable: None (`none` on the command line) is allowed.
    expected: a hand-written description of the allowed values where the generic one would be unclear.
    example: a good value to show in error messages when the default is None.
    convert: applied after the type and range checks (normalises, or raises ConfigError).
    """

    name: str
    type: tuple[str, ...]
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    min_open: bool = False
    expected: str | None = None
    example: Any = None
    convert: Callable[[Key, Any], Any] | None = None
    group: str = ""

    @property
    def accepts_bool(self) -> bool:
        """A bare `key` on the command line means key=True."""
        return "bool" in self.type


# ---------------------------------------------------------------------------------------------------------------------
# Normalisers for keys whose values come in several shapes


def _device_to_str(key: Key, value: Any) -> Any:
    """0 -> "0", [0, 1] / (0, 1) -> "0,1", "cuda:0" unchanged: downstream code parses one string form."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value) if value is not None else None


def _int_to_list(key: Key, value: Any) -> Any:
    """classes=0 -> [0]."""
    return [value] if isinstance(value, int) else value


def _imgsz(key: Key, value: Any) -> Any:
    if isinstance(value, list) and len(value) not in (1, 2):
        raise _error(key, value, "has the wrong length")
    return value


def _batch(key: Key, value: Any) -> Any:
    if isinstance(value, int) and (value >= 1 or value == -1):
        return value
    if isinstance(value, float) and 0.0 < value < 1.0:
        return value
    raise _error(key, value, "is out of range")


def _multi_scale(key: Key, value: Any) -> Any:
    """8.3 spelled multi_scale as a bool (True = sizes within +-50% of imgsz)."""
    if isinstance(value, bool):
        return 0.5 if value else 0.0
    return value


def _freeze(key: Key, value: Any) -> Any:
    if isinstance(value, list) and not all(isinstance(v, int | str) and not isinstance(v, bool) for v in value):
        raise _error(key, value, "has the wrong type")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# The table. Defaults follow the incumbent's default.yaml (8.4) except `task` (segment: this is a segmentation
# package; the model's own task always wins) and the keys marked "ours".

EXPORT_FORMATS = (
    "torchscript",
    "onnx",
    "openvino",
    "engine",
    "coreml",
    "saved_model",
    "pb",
    "tflite",
    "litert",
    "edgetpu",
    "tfjs",
    "paddle",
    "mnn",
    "ncnn",
    "imx",
    "rknn",
    "executorch",
)
OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto")
TASKS = ("segment", "detect")
MODES = ("train", "val", "predict", "export", "benchmark")

BOOL, INT, FLOAT, STR, PATH = ("bool",), ("int",), ("float",), ("str",), ("path",)
FRACTION = {"min": 0.0, "max": 1.0}

_SECTIONS: list[tuple[str, list[Key]]] = [
    (
        "General",
        [
            Key("task", STR, "segment", "task: segment or detect (set from the model when it has one)", choices=TASKS),
            Key("mode", STR, "train", "mode: train, val, predict, export or benchmark", choices=MODES),
            Key(
                "model",
                PATH,
                None,
                "weights (.pt) or architecture (.yaml), e.g. yolo11n-seg.pt",
                nullable=True,
                example="yolo11n-seg.pt",
            ),
            Key("data", PATH, None, "dataset YAML, e.g. coco8-seg.yaml", nullable=True, example="coco8-seg.yaml"),
        ],
    ),
    (
        "Train",
        [
            Key("epochs", INT, 100, "number of training epochs", min=1),
            Key(
                "time",
                FLOAT,
                None,
                "training time budget in hours; overrides epochs",
                nullable=True,
                min=0,
                min_open=True,
            ),
            Key("patience", INT, 100, "stop after this many epochs without improvement (0: never)", min=0),
            Key(
                "batch",
                ("int", "float"),
                16,
                "batch size; -1 picks one automatically; a float in (0, 1) targets that GPU memory fraction",
                expected="an int >= 1, -1 (automatic) or a float in (0, 1) (GPU memory fraction)",
                convert=_batch,
            ),
            Key(
                "imgsz",
                ("int", "list[int]"),
                640,
                "image size: an int (square) or [h, w] for predict/export",
                min=1,
                expected="an int > 0 or a list [h, w] of ints > 0",
                convert=_imgsz,
            ),
            Key("save", BOOL, True, "save checkpoints (train) and annotated results (predict)"),
            Key("save_period", INT, -1, "also save a checkpoint every N epochs (-1: off)", min=-1),
            Key(
                "cache",
                ("bool", "str"),
                "auto",
                "cache images in RAM (true/ram) or on disk (disk); auto: in RAM if under 1 GB and 10% of free memory",
                choices=("ram", "disk", "auto"),
            ),
            Key(
                "device",
                ("str", "int", "list[int]"),
                None,
                "device: cpu, 0, 0,1, cuda:0, mps (none: first GPU if any, else CPU)",
                nullable=True,
                example="cpu",
                convert=_device_to_str,
            ),
            Key("workers", INT, 8, "data loader worker processes", min=0),
            Key(
                "project",
                PATH,
                None,
                "output root folder (runs_dir setting when none)",
                nullable=True,
                example="runs/segment",
            ),
            Key(
                "name",
                STR,
                None,
                "run name, i.e. the folder under project (train, train2, ... when none)",
                nullable=True,
                example="exp",
            ),
            Key("exist_ok", BOOL, False, "reuse an existing run folder instead of numbering a new one"),
            Key("pretrained", ("bool", "path"), True, "start from pretrained weights (true) or from the given file"),
            Key("optimizer", STR, "auto", "optimizer: " + ", ".join(OPTIMIZERS), choices=OPTIMIZERS),
            Key("verbose", BOOL, True, "print detailed progress"),
            Key("seed", INT, 0, "random seed", min=0),
            Key("deterministic", BOOL, True, "use deterministic algorithms"),
            Key("single_cls", BOOL, False, "train every class as one class"),
            Key("rect", BOOL, False, "rectangular batches (aspect ratio kept; val uses them regardless)"),
            Key("cos_lr", BOOL, False, "cosine learning-rate schedule instead of linear"),
            Key("close_mosaic", INT, 10, "turn mosaic off for the last N epochs (0: never)", min=0),
            Key("resume", ("bool", "path"), False, "resume the last run (true) or the given last.pt"),
            Key(
                "amp",
                ("bool", "str"),
                True,
                "mixed precision training: true/fp16 (GPU), bf16 (GPU, or a CPU with AMX / AVX512-BF16), false/fp32",
                choices=("fp16", "bf16", "fp32"),
            ),
            Key("fraction", FLOAT, 1.0, "fraction of the training set to use", min=0.0, max=1.0, min_open=True),
            Key("profile", BOOL, False, "profile export speeds during training"),
            Key(
                "freeze",
                ("int", "list"),
                None,
                "freeze the first N layers, or the listed layer indices",
                nullable=True,
                min=0,
                example=10,
                convert=_freeze,
            ),
            Key(
                "multi_scale",
                ("float", "bool"),
                0.0,
                "random training size within +-fraction of imgsz (true: 0.5)",
                **FRACTION,
                convert=_multi_scale,
            ),
            Key(
                "compile",
                ("bool", "str"),
                False,
                "torch.compile the training step (train) or the model (predict, val): true or a mode name",
                choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
            ),
            Key(
                "jit",
                BOOL,
                True,
                "CPU predict and val: run the model as a TorchScript graph where it pays (false: eager; ours)",
            ),
            Key("overlap_mask", BOOL, True, "merge the masks of an image into one index map when training"),
            Key("mask_ratio", INT, 4, "downsample factor of training masks", min=1),
            Key(
                "dropout", FLOAT, 0.0, "dropout (classification heads only; unused by segment/detect)", min=0.0, max=1.0
            ),
        ],
    ),
    (
        "Val / test",
        [
            Key("val", BOOL, True, "validate during training"),
            Key("split", STR, "val", "dataset split to validate on", choices=("val", "test", "train")),
            Key("save_json", BOOL, False, "save predictions.json (COCO format) and evaluate it when possible"),
            Key(
                "conf",
                FLOAT,
                None,
                "confidence threshold (none: 0.25 predict, 0.001 val)",
                nullable=True,
                example=0.25,
                **FRACTION,
            ),
            Key("iou", FLOAT, 0.7, "NMS IoU threshold", **FRACTION),
            Key("max_det", INT, 300, "maximum detections per image", min=1),
            Key("half", BOOL, False, "FP16 inference / export"),
            Key("int8", BOOL, False, "INT8 quantisation (export)"),
            Key("dnn", BOOL, False, "use OpenCV DNN for ONNX inference"),
            Key("plots", BOOL, True, "save plots and images"),
            Key(
                "nms",
                BOOL,
                None,
                "export: embed NMS in the graph (true) or leave it outside (none/false)",
                nullable=True,
            ),
            Key("masks", BOOL, False, "export: assemble masks in the graph (ours)"),
            Key("crop_masks", BOOL, True, "crop masks to their boxes (false keeps mask pixels outside the box; ours)"),
        ],
    ),
    (
        "Predict",
        [
            Key(
                "source",
                ("any",),
                None,
                "image, folder, glob, video, URL or webcam index",
                nullable=True,
                example="path/to/image.jpg",
            ),
            Key("vid_stride", INT, 1, "take every Nth video frame", min=1),
            Key("stream_buffer", BOOL, False, "queue every stream frame (true) or keep only the latest"),
            Key("visualize", BOOL, False, "save feature maps"),
            Key("augment", BOOL, False, "test-time augmentation"),
            Key("agnostic_nms", BOOL, False, "class-agnostic NMS"),
            Key(
                "classes",
                ("int", "list[int]"),
                None,
                "keep only these class ids, e.g. 0 or [0, 2]",
                nullable=True,
                min=0,
                example=[0],
                convert=_int_to_list,
            ),
            Key("retina_masks", BOOL, False, "masks at the original image resolution"),
            Key(
                "embed",
                ("int", "list[int]"),
                None,
                "return feature vectors from these layer indices",
                nullable=True,
                min=0,
                example=[22],
                convert=_int_to_list,
            ),
            Key("stream", BOOL, False, "return a generator of results instead of a list (saves memory on videos)"),
        ],
    ),
    (
        "Visualize",
        [
            Key("show", BOOL, False, "show results in a window"),
            Key("save_frames", BOOL, False, "save each video frame as an image"),
            Key("save_txt", BOOL, False, "save results as .txt label files"),
            Key("save_conf", BOOL, False, "append confidences to the .txt labels"),
            Key("save_crop", BOOL, False, "save cropped detections"),
            Key("show_labels", BOOL, True, "draw class names"),
            Key("show_conf", BOOL, True, "draw confidences"),
            Key("show_boxes", BOOL, True, "draw boxes (false: masks only)"),
            Key("line_width", INT, None, "box line width (none: scaled to the image)", nullable=True, min=1, example=2),
        ],
    ),
    (
        "Export",
        [
            Key(
                "format", STR, "torchscript", "export format, e.g. torchscript, onnx, openvino", choices=EXPORT_FORMATS
            ),
            Key("optimize", BOOL, False, "optimise the exported model for the target (format-specific)"),
            Key("dynamic", BOOL, False, "dynamic input shapes"),
            Key("simplify", BOOL, True, "simplify the ONNX graph"),
            Key("opset", INT, None, "ONNX opset (none: the best one available)", nullable=True, min=9, example=17),
            Key("workspace", FLOAT, None, "TensorRT workspace in GiB", nullable=True, min=0, example=4),
        ],
    ),
    (
        "Hyperparameters",
        [
            Key("lr0", FLOAT, 0.01, "initial learning rate (ignored by optimizer=auto)", **FRACTION),
            Key("lrf", FLOAT, 0.01, "final learning rate as a fraction of lr0", **FRACTION),
            Key("momentum", FLOAT, 0.937, "SGD momentum / Adam beta1", **FRACTION),
            Key("weight_decay", FLOAT, 0.0005, "weight decay", **FRACTION),
            Key("warmup_epochs", FLOAT, 3.0, "warm-up epochs (fractions allowed)", min=0.0),
            Key("warmup_momentum", FLOAT, 0.8, "momentum at the start of warm-up", **FRACTION),
            Key("warmup_bias_lr", FLOAT, 0.1, "bias learning rate at the start of warm-up", **FRACTION),
            Key("box", FLOAT, 7.5, "box loss gain (also the mask loss gain)", min=0.0),
            Key("cls", FLOAT, 0.5, "classification loss gain", min=0.0),
            Key("dfl", FLOAT, 1.5, "distribution focal loss gain", min=0.0),
            Key("nbs", INT, 64, "nominal batch size (gradients are accumulated up to it)", min=1),
            Key("hsv_h", FLOAT, 0.015, "hue augmentation (fraction)", **FRACTION),
            Key("hsv_s", FLOAT, 0.7, "saturation augmentation (fraction)", **FRACTION),
            Key("hsv_v", FLOAT, 0.4, "value augmentation (fraction)", **FRACTION),
            Key("degrees", FLOAT, 0.0, "rotation (+-degrees)"),
            Key("translate", FLOAT, 0.1, "translation (+-fraction)", **FRACTION),
            Key("scale", FLOAT, 0.5, "scale (+-gain)", **FRACTION),
            Key("shear", FLOAT, 0.0, "shear (+-degrees)"),
            Key("perspective", FLOAT, 0.0, "perspective (+-fraction), 0 to 0.001", **FRACTION),
            Key("flipud", FLOAT, 0.0, "vertical flip probability", **FRACTION),
            Key("fliplr", FLOAT, 0.5, "horizontal flip probability", **FRACTION),
            Key("bgr", FLOAT, 0.0, "RGB <-> BGR channel swap probability", **FRACTION),
            Key("mosaic", FLOAT, 1.0, "mosaic probability", **FRACTION),
            Key("mixup", FLOAT, 0.0, "mixup probability", **FRACTION),
            Key("cutmix", FLOAT, 0.0, "cutmix probability", **FRACTION),
            Key("copy_paste", FLOAT, 0.0, "copy-paste probability (segment)", **FRACTION),
            Key(
                "copy_paste_mode",
                STR,
                "flip",
                "copy-paste source: flip (own instances) or mixup",
                choices=("flip", "mixup"),
            ),
        ],
    ),
    (
        "Other",
        [
            Key("cfg", PATH, None, "YAML file of overrides (explicit arguments win)", nullable=True, example="my.yaml"),
            Key("tracker", PATH, "tracktrack.yaml", "tracker config (tracking is not implemented by yoloseg)"),
        ],
    ),
]

KEYS: dict[str, Key] = {key.name: replace(key, group=group) for group, keys in _SECTIONS for key in keys}
DEFAULTS: dict[str, Any] = {name: key.default for name, key in KEYS.items()}

# Old spellings: old -> new, or old -> (new, invert) where the boolean value is inverted.
DEPRECATED: dict[str, str | tuple[str, bool]] = {
    "boxes": "show_boxes",
    "hide_labels": ("show_labels", True),
    "hide_conf": ("show_conf", True),
    "line_thickness": "line_width",
    "end2end": "nms",
}
# Keys the incumbent dropped: ignored with a warning.
REMOVED = frozenset({"label_smoothing", "save_hybrid", "crop_fraction", "keras"})
# Keys of the incumbent that yoloseg does not use (other tasks, unimplemented features, bookkeeping in args.yaml):
# ignored with a warning, so that incumbent cfg files and args.yaml files load.
IGNORED = frozenset(
    {
        "pose",
        "kobj",
        "rle",
        "angle",
        "dlog",
        "dgrad",
        "dlam",
        "auto_augment",
        "erasing",
        "distill_model",
        "dis",
        "cls_pw",
        "cls_remap",
        "channels_last",
        "save_dir",
    }
)
_QUANTIZE = {16: "half", "16": "half", "fp16": "half", "half": "half", 8: "int8", "8": "int8", "int8": "int8"}


# ---------------------------------------------------------------------------------------------------------------------
# Validation


def format_value(value: Any) -> str:
    """How a value is written on the command line: none, true, 3, [640, 480], bus.jpg."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    return repr(value)


def suggest(word: str, options: Iterable[str], n: int = 3) -> list[str]:
    """The closest spellings of `word` among `options` (case-insensitive)."""
    options = list(options)
    lower = {o.lower(): o for o in options}
    return [lower[m] for m in difflib.get_close_matches(word.lower(), list(lower), n=n, cutoff=0.6)]


def describe(key: Key) -> str:
    """What `key` accepts, in words: 'an int >= 1', 'a float in [0, 1] or none', 'one of ram, disk or true/false'."""
    if key.expected:
        text = key.expected
    else:
        parts = []
        for kind in key.type:
            if kind == "bool":
                parts.append("true/false")
            elif kind in ("int", "float"):
                parts.append(("an int" if kind == "int" else "a number") + _range_text(key))
            elif kind == "list[int]":
                parts.append("a list of ints" + (_range_text(key) if key.min is not None else ""))
            elif kind in ("str", "path"):
                parts.append(
                    f"one of {', '.join(key.choices)}" if key.choices else ("a path" if kind == "path" else "a string")
                )
            elif kind == "list":
                parts.append("a list")
            else:
                parts.append("any value")
        text = " or ".join(parts)
    return text + (" or none" if key.nullable else "")


def _range_text(key: Key) -> str:
    lo, hi = key.min, key.max
    if lo is not None and hi is not None:
        return f" in {'(' if key.min_open else '['}{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f" {'>' if key.min_open else '>='} {_num(lo)}"
    if hi is not None:
        return f" <= {_num(hi)}"
    return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _error(key: Key, value: Any, problem: str, hint: str = "") -> ConfigError:
    """ConfigError naming the key, the value, what it accepts and a value to try."""
    example = key.example if key.default is None else key.default
    if not hint and example is not None:
        hint = f" Try {key.name}={format_value(example)}."
    message = f"'{key.name}={format_value(value)}' {problem}: {key.name} must be {describe(key)}.{hint}"
    return ConfigError(message, key=key.name, value=value)


def _as_kind(kind: str, value: Any) -> tuple[bool, Any]:
    """Try to read `value` as `kind`; returns (ok, converted value)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool), value
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():  # 1e2 on the command line is a float
            return True, int(value)
        return False, value
    if kind == "float":
        return is_number, float(value) if is_number else value
    if kind == "str":
        return isinstance(value, str), value
    if kind == "path":
        return isinstance(value, str | os.PathLike), os.fspath(value) if isinstance(value, str | os.PathLike) else value
    if kind in ("list", "list[int]"):
        if not isinstance(value, list | tuple):
            return False, value
        if kind == "list":
            return True, list(value)
        items = [_as_kind("int", v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    return True, value  # "any"


def _in_range(key: Key, x: float) -> bool:
    if key.min is not None and (x <= key.min if key.min_open else x < key.min):
        return False
    return key.max is None or x <= key.max


def check_value(key: Key, value: Any) -> Any:
    """Validate one value for `key`; returns it normalised (e.g. 1e2 -> 100 for int keys). Raises ConfigError."""
    if value is None:
        if key.nullable:
            return None
        raise _error(key, value, "is not allowed")
    for kind in key.type:
        ok, converted = _as_kind(kind, value)
        if ok:
            break
    else:
        got = type(value).__name__
        raise _error(key, value, f"has the wrong type ({got})")

    if kind == "str" and key.choices:
        match = {c.lower(): c for c in key.choices}.get(converted.lower())
        if match is None:
            close = suggest(converted, key.choices, n=1)
            hint = f" Did you mean {key.name}={close[0]}?" if close else ""
            raise _error(key, value, "is not a valid choice", hint)
        converted = match
    elif kind in ("int", "float") and not _in_range(key, converted):
        raise _error(key, value, "is out of range")
    elif kind == "list[int]" and not all(_in_range(key, v) for v in converted):
        raise _error(key, value, "is out of range")
    elif kind == "list" and key.min is not None:
        if not all(_in_range(key, v) for v in converted if isinstance(v, int) and not isinstance(v, bool)):
            raise _error(key, value, "is out of range")
    return key.convert(key, converted) if key.convert else converted


def unknown_key_error(name: str) -> ConfigError:
    """ConfigError for a key that does not exist, listing the closest valid keys with their defaults."""
    close = suggest(name, KEYS)
    similar = ", ".join(f"{k}={format_value(DEFAULTS[k])}" for k in close)
    message = f"'{name}' is not a valid yoloseg argument."
    message += f" Similar arguments are i.e. [{similar}]." if close else ""
    message += " Run 'yolo cfg' to list every argument."
    return ConfigError(message, key=name, suggestions=close)


def _apply_aliases(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Map deprecated spellings to current keys and drop removed/ignored keys, warning once per call."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in overrides.items():
        if name in DEPRECATED:
            target = DEPRECATED[name]
            new, invert = (target, False) if isinstance(target, str) else target
            if invert and isinstance(value, bool):
                value = not value
            if new in overrides:  # the current spelling, also given, wins
                log.warning(f"WARNING: '{name}' is deprecated and ignored: '{new}' is given too.")
                continue
            log.warning(f"WARNING: '{name}' is deprecated, use '{new}' instead; using {new}={format_value(value)}.")
            name = new
        elif name == "quantize":
            if value in (None, 32, "32", "fp32"):
                continue
            target = _QUANTIZE.get(value.lower() if isinstance(value, str) else value) if _hashable(value) else None
            if target is None:
                raise ConfigError(
                    f"'quantize={format_value(value)}' is not supported by yoloseg: use half=true (fp16) or "
                    "int8=true (int8).",
                    key=name,
                    value=value,
                )
            log.warning(f"WARNING: 'quantize={format_value(value)}' is spelled '{target}=true' in yoloseg; using it.")
            name, value = target, True
        elif name in REMOVED or name in IGNORED:
            dropped.append(name)
            continue
        out[name] = value
    if dropped:
        log.warning(f"WARNING: ignoring arguments that yoloseg does not use: {', '.join(dropped)}.")
    return out


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def validate_args(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check user overrides against the table; returns a new dict of normalised values.

    Deprecated keys are renamed (with a warning), removed and other-task keys dropped (with a warning).
    Raises ConfigError on an unknown key (naming the closest valid keys) or a bad type, range or choice.
    """
    out = {}
    for name, value in _apply_aliases(overrides).items():
        if name not in KEYS:
            raise unknown_key_error(name)
        out[name] = check_value(KEYS[name], value)
    return out


def load_cfg_file(path: str | os.PathLike) -> dict[str, Any]:
    """Validated overrides from a YAML file (a mapping of key: value). Raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"cfg={path}: file not found. Pass an existing YAML file, e.g. one written by 'yolo copy-cfg'.",
            key="cfg",
            value=str(path),
        )
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cfg={path}: cannot read it as YAML ({e}).", key="cfg", value=str(path)) from e
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"cfg={path}: expected a mapping of key: value, got {type(content).__name__}.", key="cfg")
    content.pop("cfg", None)  # a cfg file does not chain to another one
    try:
        return validate_args({str(k): v for k, v in content.items()})
    except ConfigError as e:
        raise ConfigError(f"in cfg={path}: {e}", key=e.key, value=e.value, suggestions=e.suggestions) from None


def get_config(overrides: Mapping[str, Any] | None = None, cfg_file: str | os.PathLike | None = None) -> dict:
    """Every key: defaults <- cfg file (`cfg_file`, else overrides['cfg']) <- overrides, all validated."""
    explicit = validate_args(overrides or {})
    cfg_file = cfg_file if cfg_file is not None else explicit.get("cfg")
    from_file = load_cfg_file(cfg_file) if cfg_file else {}
    return {**DEFAULTS, **from_file, **explicit}


def defaults_yaml() -> str:
    """The defaults as commented YAML, grouped by section; loads back with yaml.safe_load to DEFAULTS."""
    lines = ["# yoloseg defaults: every argument with its default. Use with: yolo train cfg=this.yaml", ""]
    for group in dict.fromkeys(k.group for k in KEYS.values()):
        lines.append(f"# {group}")
        for key in (k for k in KEYS.values() if k.group == group):
            lines.append(f"{key.name}: {_yaml_scalar(key.default)}  # {key.help}")
        lines.append("")
    return "\n".join(lines)


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()
