"""The `yolo` / `yoloseg` command: `yolo [TASK] MODE key=value ...` and the special commands.

`main(argv) -> int` is the entry point (also `python -m yoloseg`); tests call it directly. Exit codes: 0 success,
2 a usage error (bad argument, missing file: one `error: ...` line on stderr), 1 a failed download, 130 interrupted. Anything else is a
bug and propagates with its traceback. Heavy modules (torch, the model, the engine) are imported only when a
command needs them.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from .config.defaults import (
    KEYS,
    MODES,
    TASKS,
    ConfigError,
    defaults_yaml,
    format_value,
    load_cfg_file,
    suggest,
    validate_args,
)
from .config.parse import parse_cli, parse_pairs
from .utils.log import log

DEFAULT_MODELS = {"segment": "yolo11n-seg.pt", "detect": "yolo11n.pt"}
OPTIONAL_PACKAGES = {  # import name -> distribution names to look up the version of
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnxscript": ("onnxscript",),
    "openvino": ("openvino",),
    "pycocotools": ("pycocotools",),
    "nncf": ("nncf",),
}
FILE_KEYS = ("model", "data", "pretrained", "resume")
CONVERT_ALIASES = {"labels": "labels_json", "images": "images_dir", "out": "out_dir"}

MODE_HELP: dict[str, tuple[str, list[str], list[str]]] = {  # mode -> (summary, examples, main keys)
    "train": (
        "Train a model on a dataset; results go to runs/<task>/train*/ (weights/best.pt, results.csv, plots).",
        [
            "yolo segment train data=coco8-seg.yaml model=yolo11n-seg.yaml epochs=100 imgsz=640",
            "yolo segment train data=coco8-seg.yaml model=yolo11n-seg.pt epochs=100 imgsz=640",
            "yolo segment train data=coco8-seg.yaml model=yolo11n-seg.yaml pretrained=yolo11n-seg.pt epochs=100 imgsz=640",
            "yolo segment train data=path/to/your_dataset.yaml model=yolo11n-seg.pt epochs=10 imgsz=320 device=cpu",
            "yolo train resume model=runs/segment/train/weights/last.pt",
            "yolo train cfg=my.yaml epochs=3      (explicit arguments override the file)",
        ],
        ["model", "data", "epochs", "time", "imgsz", "batch", "device", "workers", "patience", "optimizer", "lr0"]
        + ["pretrained", "resume", "project", "name", "exist_ok", "seed", "cache", "amp", "cfg"],
    ),
    "val": (
        "Validate a model; without data= it uses the dataset the model was trained on.",
        [
            "yolo segment val model=yolo11n-seg.pt",
            "yolo segment val model=path/to/best.pt",
            "yolo val segment data=coco.yaml device=0",
            "yolo val segment data=coco.yaml batch=1 device=cpu",
        ],
        ["model", "data", "imgsz", "batch", "conf", "iou", "max_det", "split", "save_json", "plots", "half", "device"],
    ),
    "predict": (
        "Run a model on images, folders, globs, videos, URLs or a webcam; saves annotated results.",
        [
            "yolo segment predict model=yolo11n-seg.pt source='https://ultralytics.com/images/bus.jpg'",
            "yolo segment predict model=path/to/best.pt source=path/to/images/ conf=0.5 save_txt",
            "yolo predict model=yolo11n-seg.pt source=video.mp4 retina_masks show_boxes=false",
        ],
        ["model", "source", "conf", "iou", "imgsz", "classes", "max_det", "retina_masks", "crop_masks", "save"]
        + ["save_txt", "save_conf", "save_crop", "show", "show_boxes", "show_labels", "line_width", "device"],
    ),
    "export": (
        "Export a model to another format; prints how to run the exported file.",
        [
            "yolo export model=yolo11n-seg.pt format=onnx",
            "yolo export model=path/to/best.pt format=onnx",
            "yolo export model=yolo11n-seg.pt format=onnx imgsz=320 dynamic nms",
        ],
        ["model", "format", "imgsz", "batch", "half", "int8", "dynamic", "simplify", "opset", "nms", "masks", "device"],
    ),
    "benchmark": (
        "Export to every available format, then compare size, accuracy and speed.",
        ["yolo benchmark model=yolo11n-seg.pt data=coco8-seg.yaml imgsz=640 device=cpu"],
        ["model", "data", "imgsz", "half", "int8", "device", "format"],
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Lazy loaders (tests monkeypatch these)


def _load_model_class() -> type:
    from .model import YOLO

    return YOLO


def _keep_freed_memory() -> bool:
    """The command is a process of ours: glibc keeps freed memory for the next forward (utils.memory), unless
    YOLOSEG_KEEP_FREED_MEMORY=0."""
    from .utils.memory import OPT_OUT, keep_freed_memory

    return os.environ.get(OPT_OUT) != "0" and keep_freed_memory()


def _load_convert_coco() -> Callable[..., Any]:
    from .data.convert import convert_coco

    return convert_coco


# ---------------------------------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    """Run the `yolo` command with `argv` (default: sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FileNotFoundError as e:
        print(f"error: {_file_error_text(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # ConfigError and the data module's DatasetError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # an unwritable output folder: the message names it and the fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConnectionError as e:  # a download failed (offline?): not a bug, and the message says what to do
        print(f"error: {e}", file=sys.stderr)
        return 1


def _file_error_text(e: FileNotFoundError) -> str:
    if e.filename and e.strerror:
        return f"{e.strerror}: {e.filename}"
    return str(e)


def _dispatch(argv: list[str]) -> int:
    if not argv:
        print(usage())
        return 0
    task, mode, overrides, special, extra = parse_cli(argv)
    if special is not None:
        return SPECIAL_COMMANDS[special](extra)
    return run_mode(task, mode, overrides)


def run_mode(task: str | None, mode: str | None, overrides: dict[str, Any]) -> int:
    """Resolve arguments (cfg file <- explicit overrides), load the model and call its train/val/predict/export."""
    explicit = validate_args(overrides)
    cfg_file = explicit.pop("cfg", None)
    args = {**(load_cfg_file(cfg_file) if cfg_file else {}), **explicit}
    # positional TASK / MODE words win over task= / mode= arguments
    task = task or args.pop("task", None)
    mode = mode or args.pop("mode", None)
    args.pop("task", None)
    args.pop("mode", None)
    if mode is None:
        log.warning(f"WARNING: no mode given; using mode=train. Valid modes are {', '.join(MODES)}.")
        mode = "train"
    model_name = args.pop("model", None)
    if model_name is None:
        model_name = DEFAULT_MODELS[task or "segment"]
        log.warning(f"WARNING: no model given; using model={model_name}.")
    for key, value in [("model", model_name), *((k, args.get(k)) for k in FILE_KEYS[1:])]:
        _check_local_file(key, value)
    if mode == "predict":
        if args.get("source") is None:
            raise ConfigError(
                "predict needs a source: e.g. source=path/to/image.jpg (an image, folder, glob, video, URL or "
                "webcam index).",
                key="source",
            )
        args.setdefault("save", True)  # the command line saves its results; the Python API does not by default

    _keep_freed_memory()
    # The model's own task wins over TASK; YOLO() warns on a conflict (once, for the CLI and the Python API alike).
    model = _load_model_class()(model_name, task=task)
    result = getattr(model, mode)(**args)  # benchmark: YOLO.benchmark -> yoloseg.utils.benchmarks.benchmark
    if mode == "predict" and isinstance(result, Iterator):
        for _ in result:  # stream=True returns a generator: run it to the end
            pass
    return 0


def _check_local_file(key: str, value: Any) -> None:
    """A value written as a path (with a folder part) must exist; bare names and URLs are resolved later."""
    if not isinstance(value, str) or "://" in value:
        return
    path = Path(value).expanduser()
    if (path.is_absolute() or len(path.parts) > 1) and not path.exists():
        raise FileNotFoundError(f"{key}={value}: file not found (relative paths start at {Path.cwd()}).")


# ---------------------------------------------------------------------------------------------------------------------
# Help


def usage() -> str:
    """The text of `yolo help`."""
    examples = [MODE_HELP[m][1][0] for m in ("train", "val", "predict", "export")]
    return "\n".join(
        [
            f"yoloseg {_version()}: YOLO11 instance segmentation",
            "",
            "Usage:",
            "  yolo [TASK] MODE [key=value ...]",
            f"    TASK   {' | '.join(TASKS)} (optional: taken from the model)",
            f"    MODE   {' | '.join(MODES)}",
            f"    key=value   any of the {len(KEYS)} arguments listed by 'yolo cfg', e.g. epochs=10 imgsz=320 device=cpu;",
            "                a bare true/false argument means true (save_txt); cfg=my.yaml loads arguments from a file",
            "",
            "Examples:",
            *(f"  {e}" for e in examples),
            "",
            "Special commands:",
            "  yolo help                   this text; 'yolo MODE help' for one mode, e.g. yolo train help",
            "  yolo version                the version",
            "  yolo checks                 versions, device, threads and optional packages",
            "  yolo settings               show the user settings; 'yolo settings key=value' / 'yolo settings reset'",
            "  yolo cfg                    every argument with its default and help",
            "  yolo copy-cfg               write the defaults to ./default_copy.yaml, to edit and pass as cfg=",
            "  yolo convert coco labels=instances.json images=imgs/ out=dataset/   COCO JSON -> YOLO labels",
        ]
    )


def mode_usage(mode: str) -> str:
    """The text of `yolo MODE help`."""
    summary, examples, keys = MODE_HELP[mode]
    width = max(len(k) for k in keys) + len("=none") + 8
    rows = [f"  {k}={format_value(KEYS[k].default):<{width - len(k) - 1}}{KEYS[k].help}" for k in keys]
    return "\n".join(
        [
            f"yolo [TASK] {mode} [key=value ...]",
            "",
            summary,
            "",
            "Examples:",
            *(f"  {e}" for e in examples),
            "",
            "Main arguments (default, help); 'yolo cfg' lists all:",
            *rows,
        ]
    )


def _cmd_help(extra: list[str]) -> int:
    print(mode_usage(extra[0]) if extra else usage())
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Special commands


def _version() -> str:
    try:
        from . import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        return metadata.version("yoloseg")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cmd_version(extra: list[str]) -> int:
    print(_version())
    return 0


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cmd_checks(extra: list[str]) -> int:
    """Environment report. Optional packages are found without importing them."""
    import torch  # needed for the device and thread report

    from .utils.settings import load_settings, settings_file

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if cuda:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        device = f"CUDA available: {torch.cuda.device_count()} GPU(s) ({names}), CUDA {torch.version.cuda}"
    else:
        device = "CUDA available: no" + (" (MPS available)" if mps else "") + " -> device=cpu"
    from .engine.inference import cpu_bf16_supported
    from .utils.memory import command_malloc
    from .utils.torch_utils import cpu_name, usable_cpus

    capability = torch.backends.cpu.get_cpu_capability()
    has_bf16 = cpu_bf16_supported()
    bf16 = f"bf16 hardware (AMX / AVX512-BF16): {'yes' if has_bf16 else 'no'} -> half=True and amp=bf16 run " + (
        "bf16 autocast" if has_bf16 else "fp32"
    )
    affinity = usable_cpus()
    thread_env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    cv2_version = _dist_version("opencv-python-headless", "opencv-python", "opencv-contrib-python")
    lines = [
        f"yoloseg      {_version()}",
        f"python       {platform.python_version()} ({platform.platform()})",
        f"torch        {torch.__version__}",
        f"numpy        {_dist_version('numpy') or 'not installed'}",
        f"opencv       {cv2_version or ('installed' if importlib.util.find_spec('cv2') else 'not installed')}",
        f"device       {device}",
        f"cpu          {cpu_name()}, torch kernels {capability}; {bf16}",
        f"threads      torch {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op; "
        f"{affinity} CPUs usable of {os.cpu_count()}" + (f"; {thread_env}" if thread_env else ""),
        f"malloc       {command_malloc()}",
        "optional packages:",
    ]
    for module, dists in OPTIONAL_PACKAGES.items():
        found = importlib.util.find_spec(module) is not None
        version = _dist_version(*dists) if found else None
        lines.append(f"  {module:<12} {(version or 'installed') if found else 'not installed'}")
    settings = load_settings()
    lines.append(f"settings     {settings_file()}")
    lines += [f"  {k:<12} {v}" for k, v in settings.items()]
    print("\n".join(lines))
    return 0


def _cmd_settings(extra: list[str]) -> int:
    """`yolo settings` shows, `yolo settings key=value ...` updates, `yolo settings reset` resets."""
    from .utils.settings import default_settings, load_settings, reset_settings, settings_file, update_settings

    valid = default_settings()
    updates: dict[str, str] = {}
    reset = False
    for tok in extra:
        if tok.lower() == "reset":
            reset = True
            continue
        key, eq, value = tok.partition("=")
        if not eq:
            raise ConfigError(f"settings: '{tok}' is missing '=': write key=value, e.g. runs_dir=runs, or 'reset'.")
        if key not in valid:
            close = suggest(key, valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"'{key}' is not a valid setting.{hint} Valid settings are {', '.join(valid)}.", key=key)
        updates[key] = value
    if reset:
        reset_settings()
        print(f"Settings reset to defaults in {settings_file()}")
    if updates:
        update_settings(**updates)
        print(f"Updated {', '.join(updates)} in {settings_file()}")
    print(f"Settings file: {settings_file()}")
    print(json.dumps(load_settings(), indent=2))
    return 0


def _cmd_cfg(extra: list[str]) -> int:
    print(defaults_yaml())
    return 0


def _cmd_copy_cfg(extra: list[str]) -> int:
    from .utils.files import atomic_write_text

    path = Path.cwd() / "default_copy.yaml"
    atomic_write_text(path, defaults_yaml())
    print(f"Defaults written to {path}; edit it and use it with: yolo train cfg={path.name}")
    return 0


def _cmd_convert(extra: list[str]) -> int:
    """`yolo convert coco key=value ...`: the arguments are those of yoloseg.data.convert.convert_coco."""
    words = extra
    if not words or words[0].lower() in ("help", "-h", "--help"):
        fn = _load_convert_coco()
        print(f"yolo convert coco {' '.join(f'{p}=...' for p in inspect.signature(fn).parameters)}\n")
        print(inspect.getdoc(fn) or "")
        return 0
    if words[0].lower() != "coco":
        raise ConfigError(f"convert: unknown source format '{words[0]}'; supported: coco (yolo convert coco ...).")
    fn = _load_convert_coco()
    signature = inspect.signature(fn)
    kwargs = {}
    for key, value in parse_pairs(words[1:]).items():  # labels= images= out= are short for the full names
        full = CONVERT_ALIASES.get(key)
        kwargs[full if key not in signature.parameters and full in signature.parameters else key] = value
    accepted = ", ".join(f"{p}=" for p in signature.parameters)
    unknown = [k for k in kwargs if k not in signature.parameters]
    if unknown:
        close = [c for k in unknown for c in suggest(k, signature.parameters, n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"convert coco: unknown argument(s) {', '.join(unknown)}.{hint} Arguments: {accepted}")
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"convert coco: {e}. Arguments: {accepted}") from None
    fn(**kwargs)
    return 0


SPECIAL_COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "help": _cmd_help,
    "version": _cmd_version,
    "checks": _cmd_checks,
    "settings": _cmd_settings,
    "cfg": _cmd_cfg,
    "copy-cfg": _cmd_copy_cfg,
    "convert": _cmd_convert,
}
