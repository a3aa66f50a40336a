"""The configuration table, value validation and command-line parsing (yoloseg.config.defaults / parse)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from yoloseg.config.defaults import (
    DEFAULTS,
    DEPRECATED,
    KEYS,
    REMOVED,
    ConfigError,
    check_value,
    defaults_yaml,
    get_config,
    load_cfg_file,
    validate_args,
)
from yoloseg.config.parse import normalize_tokens, parse_cli, smart_value


@pytest.fixture(autouse=True)
def warnings_seen(log_messages):
    """Messages logged by yoloseg during the test."""
    return log_messages


# ---------------------------------------------------------------------------------------------------------------------
# The table

# Defaults of the incumbent (INCUMBENT.md §1.3, 8.4.190) that the guide's users rely on.
INCUMBENT_DEFAULTS = {
    "mode": "train",
    "model": None,
    "data": None,
    "epochs": 100,
    "time": None,
    "patience": 100,
    "batch": 16,
    "imgsz": 640,
    "save": True,
    "save_period": -1,
    "cache": False,
    "device": None,
    "workers": 8,
    "project": None,
    "name": None,
    "exist_ok": False,
    "pretrained": True,
    "optimizer": "auto",
    "verbose": True,
    "seed": 0,
    "deterministic": True,
    "single_cls": False,
    "rect": False,
    "cos_lr": False,
    "close_mosaic": 10,
    "resume": False,
    "amp": True,
    "fraction": 1.0,
    "profile": False,
    "freeze": None,
    "multi_scale": 0.0,
    "compile": False,
    "overlap_mask": True,
    "mask_ratio": 4,
    "dropout": 0.0,
    "val": True,
    "split": "val",
    "save_json": False,
    "conf": None,
    "iou": 0.7,
    "max_det": 300,
    "dnn": False,
    "plots": True,
    "nms": None,
    "source": None,
    "vid_stride": 1,
    "stream_buffer": False,
    "visualize": False,
    "augment": False,
    "agnostic_nms": False,
    "classes": None,
    "retina_masks": False,
    "embed": None,
    "show": False,
    "save_frames": False,
    "save_txt": False,
    "save_conf": False,
    "save_crop": False,
    "show_labels": True,
    "show_conf": True,
    "show_boxes": True,
    "line_width": None,
    "format": "torchscript",
    "optimize": False,
    "dynamic": False,
    "simplify": True,
    "opset": None,
    "workspace": None,
    "lr0": 0.01,
    "lrf": 0.01,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "box": 7.5,
    "cls": 0.5,
    "dfl": 1.5,
    "nbs": 64,
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 0.0,
    "perspective": 0.0,
    "flipud": 0.0,
    "fliplr": 0.5,
    "bgr": 0.0,
    "mosaic": 1.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "copy_paste": 0.0,
    "copy_paste_mode": "flip",
    "cfg": None,
    "tracker": "tracktrack.yaml",
}
OURS = {
    "task": "segment",
    "half": False,
    "int8": False,
    "masks": False,
    "crop_masks": True,
    "stream": False,
    "jit": True,
    "cache": "auto",  # the incumbent's False reads every image from disk; auto keeps small sets in RAM
}


def test_defaults_match_incumbent_and_ours():
    assert {**INCUMBENT_DEFAULTS, **OURS} == DEFAULTS
    for name, value in DEFAULTS.items():  # same type too: 1.0 is not 1
        assert type(value) is type({**INCUMBENT_DEFAULTS, **OURS}[name]), name


@pytest.mark.parametrize("name", sorted(KEYS))
def test_every_key_is_documented_and_its_default_validates(name):
    key = KEYS[name]
    assert key.name == name
    assert key.help and "\n" not in key.help and len(key.help) < 120
    assert set(key.type) <= {"bool", "int", "float", "str", "path", "list[int]", "list", "any"}
    assert check_value(key, key.default) == key.default
    assert key.group


def test_defaults_yaml_loads_back_to_defaults():
    assert yaml.safe_load(defaults_yaml()) == DEFAULTS


# ---------------------------------------------------------------------------------------------------------------------
# Validation

COERCIONS = [
    ({"epochs": 1e2}, {"epochs": 100}),
    ({"epochs": 3.0}, {"epochs": 3}),
    ({"lr0": 1}, {"lr0": 1.0}),
    ({"imgsz": (320, 256)}, {"imgsz": [320, 256]}),
    ({"imgsz": 320.0}, {"imgsz": 320}),
    ({"device": 0}, {"device": "0"}),
    ({"device": (0, 1)}, {"device": "0,1"}),
    ({"device": "cpu"}, {"device": "cpu"}),
    ({"classes": 0}, {"classes": [0]}),
    ({"classes": (0, 2)}, {"classes": [0, 2]}),
    ({"optimizer": "adamw"}, {"optimizer": "AdamW"}),
    ({"format": "ONNX"}, {"format": "onnx"}),
    ({"multi_scale": True}, {"multi_scale": 0.5}),
    ({"multi_scale": False}, {"multi_scale": 0.0}),
    ({"cache": "ram"}, {"cache": "ram"}),
    ({"cache": True}, {"cache": True}),
    ({"amp": "bf16"}, {"amp": "bf16"}),
    ({"pretrained": Path("a/b.pt")}, {"pretrained": str(Path("a/b.pt"))}),
    ({"resume": True}, {"resume": True}),
    ({"batch": -1}, {"batch": -1}),
    ({"batch": 0.6}, {"batch": 0.6}),
    ({"batch": 8.0}, {"batch": 8}),
    ({"conf": None, "nms": None}, {"conf": None, "nms": None}),
    ({"freeze": [0, "model.1"]}, {"freeze": [0, "model.1"]}),
    ({"source": 0}, {"source": 0}),
    ({"copy_paste_mode": "MixUp"}, {"copy_paste_mode": "mixup"}),
]


@pytest.mark.parametrize("given, expected", COERCIONS)
def test_validate_args_coerces(given, expected):
    assert validate_args(given) == expected


def test_validate_args_is_idempotent():
    once = validate_args({k: v for given, _ in COERCIONS for k, v in given.items()})
    assert validate_args(once) == once


# (overrides, words the message must contain: the key and the fix)
BAD_VALUES = [
    ({"epochs": -1}, ["'epochs=-1'", "out of range", ">= 1", "Try epochs=100"]),
    ({"epochs": 3.5}, ["'epochs=3.5'", "wrong type (float)", "an int"]),
    ({"epochs": True}, ["'epochs=true'", "wrong type (bool)"]),
    ({"epochs": None}, ["'epochs=none'", "not allowed"]),
    ({"save": "yes"}, ["'save=yes'", "true/false"]),
    ({"save": 1}, ["'save=1'", "true/false"]),
    ({"conf": 2}, ["'conf=2'", "out of range", "in [0, 1]", "Try conf=0.25"]),
    ({"iou": -0.1}, ["'iou=-0.1'", "in [0, 1]"]),
    ({"imgsz": "abc"}, ["'imgsz=abc'", "wrong type (str)", "Try imgsz=640"]),
    ({"imgsz": [1, 2, 3]}, ["'imgsz=[1, 2, 3]'", "wrong length", "[h, w]"]),
    ({"imgsz": 0}, ["'imgsz=0'", "out of range"]),
    ({"batch": 0}, ["'batch=0'", "-1 (automatic)"]),
    ({"batch": 1.5}, ["'batch=1.5'", "float in (0, 1)"]),
    ({"fraction": 0}, ["'fraction=0'", "(0, 1]"]),
    ({"optimizer": "adamm"}, ["'optimizer=adamm'", "not a valid choice", "Did you mean optimizer=Adam?"]),
    ({"format": "onxx"}, ["'format=onxx'", "Did you mean format=onnx?"]),
    ({"cache": "rom"}, ["'cache=rom'", "ram, disk"]),
    ({"classes": [0, -1]}, ["'classes=[0, -1]'", "out of range"]),
    ({"task": "pose"}, ["'task=pose'", "segment, detect"]),
    ({"mode": "track"}, ["'mode=track'", "train, val, predict, export, benchmark"]),
    ({"quantize": "w8a16"}, ["quantize=w8a16", "half=true", "int8=true"]),
]


@pytest.mark.parametrize("given, words", BAD_VALUES)
def test_bad_values_name_the_key_and_the_fix(given, words):
    with pytest.raises(ConfigError) as info:
        validate_args(given)
    for word in words:
        assert word in str(info.value)
    assert info.value.key == next(iter(given))


@pytest.mark.parametrize(
    "name, suggested",
    [("epoch", "epochs=100"), ("lr", "lr0=0.01"), ("imgsize", "imgsz=640"), ("SAVE_TXT", "save_txt=false")],
)
def test_unknown_key_suggests_close_keys_with_defaults(name, suggested):
    with pytest.raises(ConfigError) as info:
        validate_args({name: 3})
    message = str(info.value)
    assert message.startswith(f"'{name}' is not a valid yoloseg argument. Similar arguments are i.e. [")
    assert suggested in message


def test_unknown_key_without_close_match():
    with pytest.raises(ConfigError, match="not a valid yoloseg argument. Run 'yolo cfg'"):
        validate_args({"zzzzqqq": 1})


@pytest.mark.parametrize(
    "old, value, new, expected",
    [
        ("hide_labels", True, "show_labels", False),
        ("hide_conf", False, "show_conf", True),
        ("boxes", False, "show_boxes", False),
        ("line_thickness", 3, "line_width", 3),
        ("end2end", True, "nms", True),
    ],
)
def test_deprecated_keys_are_mapped_with_a_warning(old, value, new, expected, warnings_seen):
    assert old in DEPRECATED
    assert validate_args({old: value}) == {new: expected}
    assert any(old in w and "deprecated" in w and new in w for w in warnings_seen)


def test_current_spelling_wins_over_deprecated(warnings_seen):
    assert validate_args({"hide_labels": True, "show_labels": True}) == {"show_labels": True}
    assert any("hide_labels" in w for w in warnings_seen)


@pytest.mark.parametrize("name", sorted(REMOVED) + ["pose", "erasing", "channels_last", "save_dir"])
def test_removed_and_other_task_keys_are_dropped_with_a_warning(name, warnings_seen):
    assert validate_args({name: 1, "epochs": 2}) == {"epochs": 2}
    assert any(name in w and "ignoring" in w for w in warnings_seen)


@pytest.mark.parametrize("value, expected", [("fp16", {"half": True}), (8, {"int8": True}), ("fp32", {})])
def test_quantize_is_translated(value, expected):
    assert validate_args({"quantize": value}) == expected


# ---------------------------------------------------------------------------------------------------------------------
# get_config and cfg files


def test_get_config_layers_defaults_file_and_overrides(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("epochs: 5\nimgsz: 320\nlr0: 0.02\n")
    args = get_config({"epochs": 3}, cfg_file=cfg)
    assert (args["epochs"], args["imgsz"], args["lr0"], args["batch"]) == (3, 320, 0.02, 16)
    assert set(args) == set(DEFAULTS)
    assert get_config({"cfg": str(cfg)})["epochs"] == 5  # cfg=... inside the overrides
    assert get_config() == DEFAULTS and get_config() is not DEFAULTS


def test_cfg_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cfg=missing.yaml: file not found"):
        get_config({"cfg": "missing.yaml"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: -3\n")
    with pytest.raises(ConfigError, match=r"in cfg=.*bad.yaml: 'epochs=-3' is out of range"):
        load_cfg_file(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_cfg_file(bad)
    bad.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="cannot read it as YAML"):
        load_cfg_file(bad)
    bad.write_text("")
    assert load_cfg_file(bad) == {}


def test_incumbent_args_yaml_loads(tmp_path, warnings_seen):
    """An args.yaml written by the incumbent (8.4 keys, other-task keys, save_dir) is usable as cfg=."""
    args = {**DEFAULTS, "quantize": None, "pose": 12.0, "kobj": 1.0, "cls_remap": True, "save_dir": "runs/x"}
    args.update({"channels_last": None, "auto_augment": "randaugment", "erasing": 0.4, "task": "segment"})
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(args))
    loaded = load_cfg_file(path)
    assert loaded == {k: v for k, v in DEFAULTS.items() if k != "cfg"}  # a cfg file does not chain
    assert any("pose" in w and "save_dir" in w for w in warnings_seen)


# ---------------------------------------------------------------------------------------------------------------------
# Command-line parsing


@pytest.mark.parametrize(
    "text, value",
    [
        ("none", None),
        ("None", None),
        ("NONE", None),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("3", 3),
        ("-1", -1),
        ("0.25", 0.25),
        ("1e-3", 0.001),
        ("1e2", 100.0),
        ("[640, 480]", [640, 480]),
        ("(1, 2)", (1, 2)),
        ("0,1", (0, 1)),
        ("'bus.jpg'", "bus.jpg"),
        ("coco8-seg.yaml", "coco8-seg.yaml"),
        ("path/to/best.pt", "path/to/best.pt"),
        ("https://ultralytics.com/images/bus.jpg", "https://ultralytics.com/images/bus.jpg"),
        ("cpu", "cpu"),
        ("yolo11n-seg", "yolo11n-seg"),
    ],
)
def test_smart_value(text, value):
    assert smart_value(text) == value
    assert type(smart_value(text)) is type(value)


PARSE = [
    ("segment train epochs=3", ("segment", "train", {"epochs": 3})),
    ("train segment epochs=3", ("segment", "train", {"epochs": 3})),
    ("val segment data=coco.yaml device=0", ("segment", "val", {"data": "coco.yaml", "device": 0})),
    ("train imgsz = 320", (None, "train", {"imgsz": 320})),
    ("train imgsz= 320", (None, "train", {"imgsz": 320})),
    ("train imgsz =320", (None, "train", {"imgsz": 320})),
    ("train classes=[0, 2]", (None, "train", {"classes": [0, 2]})),
    ("predict imgsz=[320, 256] source=a.jpg", (None, "predict", {"imgsz": [320, 256], "source": "a.jpg"})),
    ("train imgsz = [320, 256]", (None, "train", {"imgsz": [320, 256]})),
    ("train --epochs=3", (None, "train", {"epochs": 3})),
    ("train --epochs 3", None),  # bare 'epochs' after stripping: missing '='
    ("train epochs=3,", (None, "train", {"epochs": 3})),
    ("train lr0=1e-3 epochs=1e2", (None, "train", {"lr0": 0.001, "epochs": 100.0})),
    (
        "predict show save_txt SAVE_CONF=True conf=None",
        (None, "predict", {"show": True, "save_txt": True, "SAVE_CONF": True, "conf": None}),
    ),
    ("train name=001 project=runs/007", (None, "train", {"name": "001", "project": "runs/007"})),
    ("predict nms half hide_labels", (None, "predict", {"nms": True, "half": True, "hide_labels": True})),
    ("export", (None, "export", {})),
    ("Segment TRAIN", ("segment", "train", {})),
]


@pytest.mark.parametrize("line, expected", PARSE)
def test_parse_cli(line, expected):
    if expected is None:
        with pytest.raises(ConfigError, match="missing '='"):
            parse_cli(line.split())
        return
    task, mode, overrides, special, extra = parse_cli(line.split())
    assert (special, extra) == (None, [])
    assert (task, mode, overrides) == expected


def test_dash_and_comma_cleanup_warns(warnings_seen):
    assert normalize_tokens(["--epochs=3", "imgsz=320,"]) == ["epochs=3", "imgsz=320"]
    assert any("--epochs=3" in w for w in warnings_seen)
    assert any("imgsz=320," in w for w in warnings_seen)


@pytest.mark.parametrize(
    "line, special, extra",
    [
        ("help", "help", []),
        ("-h", "help", []),
        ("--help", "help", []),
        ("train help", "help", ["train"]),
        ("segment predict help", "help", ["predict"]),
        ("help export", "help", ["export"]),
        ("version", "version", []),
        ("checks", "checks", []),
        ("settings reset", "settings", ["reset"]),
        ("settings runs_dir=/tmp/runs", "settings", ["runs_dir=/tmp/runs"]),
        ("cfg", "cfg", []),
        ("copy-cfg", "copy-cfg", []),
        ("convert coco labels=a", "convert", ["coco", "labels=a"]),
    ],
)
def test_parse_special_commands(line, special, extra):
    assert parse_cli(line.split())[3:] == (special, extra)


@pytest.mark.parametrize(
    "line, words",
    [
        ("segment train epochs", ["'epochs' is missing '='", "epochs=100"]),
        ("segment trian", ["'trian' is not a valid mode", "Did you mean 'train'?"]),
        ("segmnt train", ["Did you mean 'segment'?"]),
        ("pose train", ["task 'pose' is not supported", "segment, detect"]),
        ("track model=a.pt", ["mode 'track' is not supported"]),
        ("segment detect train", ["two tasks"]),
        ("train val", ["two modes"]),
        ("train cfg", ["'cfg' is missing '='", "cfg=my.yaml"]),
        ("train imgsz=", ["'imgsz=' has no value", "imgsz=none"]),
        ("=3", ["no key before '='"]),
    ],
)
def test_parse_errors(line, words):
    with pytest.raises(ConfigError) as info:
        parse_cli(line.split())
    for word in words:
        assert word in str(info.value)


def test_device_strings_without_cuda(monkeypatch):
    """Device arguments parse the same with or without a GPU; asking for CUDA where there is none says so and names
    the fix, and a string that is no device says what is accepted."""
    import torch

    from yoloseg.config.defaults import ConfigError
    from yoloseg.utils.torch_utils import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("cpu") == select_device(None) == torch.device("cpu")
    for text in ("cuda", "CUDA:0", 0, "0,1"):
        with pytest.raises(ConfigError, match="asks for CUDA but torch.cuda.is_available.. is False; use device=cpu"):
            select_device(text)
    with pytest.raises(ConfigError, match="is not a device; use cpu, 0, 0,1 or cuda:0"):
        select_device("gpu")
