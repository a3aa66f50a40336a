"""The `yolo` command through `cli.main(argv)`, with the YOLO facade replaced by a recorder.

Every CLI line of the guide (shared/reference/guide-segment.md) must reach the right method with the right parsed
arguments; every bad input must exit with code 2 and one `error:` line that names the key and the fix.
The end-to-end versions (real training on a tiny dataset) live with the engine tests.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yoloseg import cli
from yoloseg.config.defaults import DEFAULTS, KEYS
from yoloseg.data.errors import DatasetError

from .conftest import REPO, run_python


@pytest.fixture(autouse=True)
def warnings_seen(log_messages):
    """Messages logged by yoloseg during the test."""
    return log_messages


class FakeYOLO:
    """Stands in for yoloseg.model.YOLO: records the constructor and method calls."""

    calls: list[tuple] = []
    raises: BaseException | None = None

    def __init__(self, model, task=None):
        self.calls.append(("init", str(model), task))
        name = Path(str(model)).name
        self.task = "segment" if "-seg" in name or name == "best.pt" else "detect"

    def _record(self, method, kwargs):
        self.calls.append((method, kwargs))
        if self.raises is not None:
            raise self.raises

    def train(self, **kwargs):
        self._record("train", kwargs)

    def val(self, **kwargs):
        self._record("val", kwargs)

    def predict(self, **kwargs):
        self._record("predict", kwargs)
        if kwargs.get("stream"):
            return (self.calls.append(("frame", i)) for i in range(2))
        return []

    def export(self, **kwargs):
        self._record("export", kwargs)
        return "model.onnx"

    def benchmark(self, **kwargs):
        self._record("benchmark", kwargs)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Run in an empty folder holding the guide's `path/to/...` files, with the facade replaced by FakeYOLO."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "path/to").mkdir(parents=True)
    (tmp_path / "path/to/best.pt").write_bytes(b"")
    (tmp_path / "path/to/your_dataset.yaml").write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\n")
    monkeypatch.setattr(FakeYOLO, "calls", [])
    monkeypatch.setattr(FakeYOLO, "raises", None)
    monkeypatch.setattr(cli, "_load_model_class", lambda: FakeYOLO)
    return FakeYOLO


def run(line: str) -> int:
    """`yolo <line>` as a shell would split it."""
    return cli.main(shlex.split(line))


# ---------------------------------------------------------------------------------------------------------------------
# The guide's CLI lines, as written

BUS = "https://ultralytics.com/images/bus.jpg"
GUIDE = [
    (
        "segment train data=coco8-seg.yaml model=yolo11n-seg.yaml epochs=100 imgsz=640",
        ("yolo11n-seg.yaml", "segment"),
        ("train", {"data": "coco8-seg.yaml", "epochs": 100, "imgsz": 640}),
    ),
    (
        "segment train data=coco8-seg.yaml model=yolo11n-seg.pt epochs=100 imgsz=640",
        ("yolo11n-seg.pt", "segment"),
        ("train", {"data": "coco8-seg.yaml", "epochs": 100, "imgsz": 640}),
    ),
    (
        "segment train data=coco8-seg.yaml model=yolo11n-seg.yaml pretrained=yolo11n-seg.pt epochs=100 imgsz=640",
        ("yolo11n-seg.yaml", "segment"),
        ("train", {"data": "coco8-seg.yaml", "pretrained": "yolo11n-seg.pt", "epochs": 100, "imgsz": 640}),
    ),
    ("segment val model=yolo11n-seg.pt", ("yolo11n-seg.pt", "segment"), ("val", {})),
    ("segment val model=path/to/best.pt", ("path/to/best.pt", "segment"), ("val", {})),
    (
        f"segment predict model=yolo11n-seg.pt source='{BUS}'",
        ("yolo11n-seg.pt", "segment"),
        ("predict", {"source": BUS, "save": True}),
    ),
    (
        f"segment predict model=path/to/best.pt source='{BUS}'",
        ("path/to/best.pt", "segment"),
        ("predict", {"source": BUS, "save": True}),
    ),
    ("export model=yolo11n-seg.pt format=onnx", ("yolo11n-seg.pt", None), ("export", {"format": "onnx"})),
    ("export model=path/to/best.pt format=onnx", ("path/to/best.pt", None), ("export", {"format": "onnx"})),
    (
        "segment train data=path/to/your_dataset.yaml model=yolo11n-seg.pt epochs=100 imgsz=640",
        ("yolo11n-seg.pt", "segment"),
        ("train", {"data": "path/to/your_dataset.yaml", "epochs": 100, "imgsz": 640}),
    ),
    (
        "val segment data=coco.yaml device=0",
        ("yolo11n-seg.pt", "segment"),
        ("val", {"data": "coco.yaml", "device": "0"}),
    ),
    (
        "val segment data=coco.yaml batch=1 device=cpu",
        ("yolo11n-seg.pt", "segment"),
        ("val", {"data": "coco.yaml", "batch": 1, "device": "cpu"}),
    ),
]


@pytest.mark.parametrize("line, init, call", GUIDE, ids=[g[0] for g in GUIDE])
def test_guide_lines(fake, line, init, call):
    assert run(line) == 0
    assert fake.calls == [("init", *init), call]


def test_guide_predict_with_quotes_kept(fake):
    """Without a shell (e.g. a Python list) the quotes reach us; they are removed like the shell would."""
    assert cli.main(["segment", "predict", "model=yolo11n-seg.pt", f"source='{BUS}'"]) == 0
    assert fake.calls[-1] == ("predict", {"source": BUS, "save": True})


def test_small_training_run_with_local_data(fake, tmp_path):
    assert run("segment train data=path/to/your_dataset.yaml model=yolo11n-seg.yaml epochs=1 imgsz=64 batch=2") == 0
    assert fake.calls[-1] == ("train", {"data": "path/to/your_dataset.yaml", "epochs": 1, "imgsz": 64, "batch": 2})


def test_benchmark_mode(fake):
    assert run("benchmark model=yolo11n-seg.pt data=coco8-seg.yaml imgsz=160 half=False") == 0
    assert fake.calls[-1] == ("benchmark", {"data": "coco8-seg.yaml", "imgsz": 160, "half": False})


# ---------------------------------------------------------------------------------------------------------------------
# Argument handling on the way to the model


def test_spaces_lists_and_dashes_reach_the_model(fake):
    argv = ["segment", "predict", "model=yolo11n-seg.pt", "source", "=", "img.jpg", "imgsz=", "[320,", "256]"]
    argv += ["--conf=0.5", "classes=0,", "retina_masks", "save=False"]
    assert cli.main(argv) == 0
    assert fake.calls[-1] == (
        "predict",
        {"source": "img.jpg", "imgsz": [320, 256], "conf": 0.5, "classes": [0], "retina_masks": True, "save": False},
    )


def test_int_keys_accept_exponent_floats(fake):
    assert run("train model=yolo11n-seg.yaml epochs=1e2 lr0=1e-3 batch=8.0") == 0
    assert fake.calls[-1] == ("train", {"epochs": 100, "lr0": 0.001, "batch": 8})


def test_task_reaches_the_model_which_decides(fake):
    """YOLO(model, task=TASK): the model's own task wins, and YOLO warns on a conflict."""
    assert run("detect val model=yolo11n-seg.pt") == 0
    assert fake.calls[0] == ("init", "yolo11n-seg.pt", "detect")
    assert run("val model=yolo11n-seg.pt") == 0
    assert fake.calls[2] == ("init", "yolo11n-seg.pt", None)


def test_default_model_follows_the_task(fake, warnings_seen):
    assert run("detect val data=coco8.yaml") == 0
    assert fake.calls[0] == ("init", "yolo11n.pt", "detect")
    assert run("segment val") == 0
    assert fake.calls[2] == ("init", "yolo11n-seg.pt", "segment")
    assert any("no model given" in w for w in warnings_seen)


def test_missing_mode_defaults_to_train_with_a_warning(fake, warnings_seen):
    assert run("segment model=yolo11n-seg.yaml epochs=1") == 0
    assert fake.calls[-1] == ("train", {"epochs": 1})
    assert any("no mode given" in w for w in warnings_seen)


def test_mode_and_task_as_arguments(fake):
    assert run("mode=val task=segment model=yolo11n-seg.pt") == 0
    assert fake.calls == [("init", "yolo11n-seg.pt", "segment"), ("val", {})]


def test_predict_save_default_and_stream_is_consumed(fake):
    assert run("predict model=yolo11n-seg.pt source=img.jpg stream") == 0
    assert fake.calls[-3:] == [
        ("predict", {"source": "img.jpg", "stream": True, "save": True}),
        ("frame", 0),
        ("frame", 1),
    ]


def test_deprecated_spelling_is_mapped(fake, warnings_seen):
    assert run("predict model=yolo11n-seg.pt source=img.jpg hide_labels=True line_thickness=2") == 0
    assert fake.calls[-1] == ("predict", {"source": "img.jpg", "show_labels": False, "line_width": 2, "save": True})
    assert any("'hide_labels' is deprecated" in w and "show_labels=false" in w for w in warnings_seen)
    assert run("predict model=yolo11n-seg.pt source=img.jpg hide_conf") == 0  # bare: hide_conf=True
    assert fake.calls[-1][1]["show_conf"] is False


def test_cfg_file_then_explicit_arguments(fake, tmp_path):
    (tmp_path / "my.yaml").write_text("epochs: 5\nimgsz: 320\nmodel: yolo11n-seg.yaml\nmode: train\n")
    assert run("segment cfg=my.yaml epochs=3") == 0
    assert fake.calls == [("init", "yolo11n-seg.yaml", "segment"), ("train", {"epochs": 3, "imgsz": 320})]


def test_copy_cfg_output_is_a_valid_cfg(fake, tmp_path, capsys):
    assert run("copy-cfg") == 0
    path = tmp_path / "default_copy.yaml"
    assert "default_copy.yaml" in capsys.readouterr().out
    assert yaml.safe_load(path.read_text()) == DEFAULTS
    assert run("train cfg=default_copy.yaml epochs=2") == 0
    method, kwargs = fake.calls[-1]
    assert method == "train" and kwargs["epochs"] == 2 and kwargs["imgsz"] == 640
    assert set(kwargs) == set(KEYS) - {"task", "mode", "model", "cfg"}


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: exit code 2 and one clear line. The table in the note is this list.

BAD_INPUT = [
    ("segment train epoch=3", "'epoch' is not a valid yoloseg argument. Similar arguments are i.e. [epochs=100]"),
    ("segment train epochs=-1", "'epochs=-1' is out of range: epochs must be an int >= 1. Try epochs=100."),
    ("segment predict source=a.jpg conf=2", "'conf=2' is out of range: conf must be a number in [0, 1] or none."),
    ("segment train imgsz=abc", "'imgsz=abc' has the wrong type (str): imgsz must be an int > 0 or a list [h, w]"),
    ("segment train save=yes", "'save=yes' has the wrong type (str): save must be true/false. Try save=true."),
    ("segment train epochs", "'epochs' is missing '=': write epochs=<value>, e.g. epochs=100."),
    ("segment train imgsz=", "'imgsz=' has no value after '=': write imgsz=<value>, or imgsz=none to unset it."),
    ("segment trian", "'trian' is not a valid mode, task or command. Did you mean 'train'?"),
    ("segmnt train", "'segmnt' is not a valid mode, task or command. Did you mean 'segment'?"),
    ("pose train", "task 'pose' is not supported by yoloseg: valid tasks are segment, detect."),
    ("track model=yolo11n-seg.pt", "mode 'track' is not supported by yoloseg"),
    ("segment detect train", "two tasks given ('segment' and 'detect')"),
    ("train optimizer=adamm", "'optimizer=adamm' is not a valid choice: optimizer must be one of SGD, Adam,"),
    ("export format=onxx", "Did you mean format=onnx?"),
    ("train batch=0", "'batch=0' is out of range: batch must be an int >= 1, -1 (automatic) or a float in (0, 1)"),
    ("train cfg=missing.yaml", "cfg=missing.yaml: file not found."),
    ("segment val model=path/to/missing.pt", "model=path/to/missing.pt: file not found"),
    ("segment train data=path/to/missing.yaml", "data=path/to/missing.yaml: file not found"),
    ("segment predict model=yolo11n-seg.pt", "predict needs a source: e.g. source=path/to/image.jpg"),
    ("settings runs_dri=x", "'runs_dri' is not a valid setting. Did you mean 'runs_dir'?"),
    ("settings runs_dir", "settings: 'runs_dir' is missing '='"),
    ("convert voc", "convert: unknown source format 'voc'; supported: coco"),
]


@pytest.mark.parametrize("line, message", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_exits_2_with_one_clear_line(fake, capsys, line, message):
    assert run(line) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert [c for c in fake.calls if c[0] != "init"] == []  # nothing ran


@pytest.mark.parametrize(
    "error, code",
    [
        (FileNotFoundError(2, "No such file or directory", "images/val"), 2),
        (DatasetError("data.yaml: 'names' is missing"), 2),
        (ValueError("predict needs a source"), 2),
        (ConnectionError("Could not download yolo11n-seg.pt"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_errors_from_the_engine(fake, capsys, error, code):
    fake.raises = error
    assert run("segment val model=yolo11n-seg.pt") == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    if code != 130:
        assert err.startswith("error: ") and (str(error.args[-1]) in err)


def test_bugs_keep_their_traceback(fake):
    fake.raises = RuntimeError("a real bug")
    with pytest.raises(RuntimeError, match="a real bug"):
        run("segment val model=yolo11n-seg.pt")


# ---------------------------------------------------------------------------------------------------------------------
# Special commands


@pytest.mark.parametrize("argv", [[], ["help"], ["-h"], ["--help"], ["segment", "help"]])
def test_help(capsys, argv):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "yolo [TASK] MODE [key=value ...]" in out
    assert "yolo segment train data=coco8-seg.yaml model=yolo11n-seg.yaml epochs=100 imgsz=640" in out
    for command in ("help", "version", "checks", "settings", "cfg", "copy-cfg", "convert"):
        assert f"yolo {command}" in out


@pytest.mark.parametrize("mode", ["train", "val", "predict", "export", "benchmark"])
def test_mode_help(capsys, mode):
    assert run(f"segment {mode} help") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"yolo [TASK] {mode} [key=value ...]")
    assert f" {mode} " in out.split("Examples:")[1]
    assert run(f"help {mode}") == 0
    assert capsys.readouterr().out == out


def test_version(capsys):
    from yoloseg import __version__

    assert run("version") == 0
    assert capsys.readouterr().out.strip() == __version__


def test_checks(capsys):
    assert run("checks") == 0
    out = capsys.readouterr().out
    for word in ("python", "torch", "numpy", "opencv", "CUDA available", "threads", "onnx", "onnxruntime"):
        assert word in out
    for package in ("openvino", "pycocotools", "nncf"):
        assert package in out


@pytest.mark.parametrize("bf16", [True, False])
def test_checks_says_whether_half_runs_bf16_on_this_cpu(monkeypatch, capsys, bf16):
    from yoloseg.engine import inference

    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: bf16)
    assert run("checks") == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cpu "))
    assert "torch kernels" in line
    assert line.endswith("half=True and amp=bf16 run " + ("bf16 autocast" if bf16 else "fp32"))


def test_checks_reports_gpus(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    assert run("checks") == 0
    assert "CUDA available: 2 GPU(s) (GPU0, GPU1)" in capsys.readouterr().out


def test_cfg_prints_every_key(capsys):
    assert run("cfg") == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == DEFAULTS
    assert "epochs: 100  # number of training epochs" in out


@pytest.fixture
def config_dir(monkeypatch, tmp_path):
    folder = tmp_path / "config"
    monkeypatch.setenv("YOLOSEG_CONFIG_DIR", str(folder))
    for env in ("YOLOSEG_DATASETS_DIR", "YOLOSEG_WEIGHTS_DIR", "YOLOSEG_RUNS_DIR", "YOLOSEG_WEIGHTS_URL"):
        monkeypatch.delenv(env, raising=False)
    return folder


def test_settings_show_set_reset(config_dir, capsys):
    assert run("settings") == 0
    out = capsys.readouterr().out
    assert str(config_dir / "settings.json") in out and '"runs_dir": "runs"' in out
    assert not (config_dir / "settings.json").exists()  # showing writes nothing

    assert run("settings runs_dir=/tmp/my_runs datasets_dir = /data") == 0
    stored = json.loads((config_dir / "settings.json").read_text())
    assert (stored["runs_dir"], stored["datasets_dir"]) == ("/tmp/my_runs", "/data")
    assert '"runs_dir": "/tmp/my_runs"' in capsys.readouterr().out

    assert run("settings reset") == 0
    stored = json.loads((config_dir / "settings.json").read_text())
    assert (stored["runs_dir"], stored["datasets_dir"]) == ("runs", "datasets")


def test_convert_passes_arguments_and_checks_them(monkeypatch, capsys):
    seen = {}

    def convert_coco(labels, images=None, out="coco_converted", use_segments=True):
        """Convert COCO JSON to YOLO labels."""
        seen.update(labels=labels, images=images, out=out, use_segments=use_segments)

    monkeypatch.setattr(cli, "_load_convert_coco", lambda: convert_coco)
    assert run("convert coco labels=ann/ images=imgs out=yolo_labels use_segments=False") == 0
    assert seen == {"labels": "ann/", "images": "imgs", "out": "yolo_labels", "use_segments": False}
    assert run("convert coco labelz=ann/") == 2
    err = capsys.readouterr().err
    assert "unknown argument(s) labelz. Did you mean labels?" in err and "labels=, images=, out=, use_segments=" in err
    assert run("convert coco images=imgs") == 2
    assert "missing a required argument: 'labels'" in capsys.readouterr().err
    assert run("convert help") == 0
    assert "yolo convert coco labels=..." in capsys.readouterr().out


def test_convert_short_names_map_to_the_full_ones(monkeypatch):
    seen = {}

    def convert_coco(labels_json, images_dir, out_dir, use_rle=False):
        seen.update(labels_json=labels_json, images_dir=images_dir, out_dir=out_dir, use_rle=use_rle)

    monkeypatch.setattr(cli, "_load_convert_coco", lambda: convert_coco)
    assert run("convert coco labels=a.json images=imgs out=ds") == 0
    assert seen == {"labels_json": "a.json", "images_dir": "imgs", "out_dir": "ds", "use_rle": False}
    assert run("convert coco labels_json=b.json images_dir=imgs out_dir=ds use_rle") == 2  # bare word: needs '='
    assert run("convert coco labels_json=b.json images_dir=imgs out_dir=ds use_rle=true") == 0
    assert seen["labels_json"] == "b.json" and seen["use_rle"] is True


def test_main_reads_sys_argv(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["yolo", "version"])
    assert cli.main() == 0
    assert capsys.readouterr().out.strip()


def test_python_dash_m_and_no_heavy_imports():
    """`python -m yoloseg` works, and importing the CLI and parsing arguments does not import torch."""
    code = (
        "import sys; from yoloseg import cli; cli.main(['help']); "
        "from yoloseg.config.parse import parse_cli; parse_cli(['train', 'epochs=3']); "
        "print('torch' in sys.modules)"
    )
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")
    result = subprocess.run(
        [sys.executable, "-m", "yoloseg", "segment", "train", "epoch=3"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Similar arguments are i.e. [epochs=100]" in result.stderr


def test_unwritable_output_folder_is_a_clear_error(tmp_path, capsys):
    """A run folder that cannot be created (here a file is in the way) gives one line naming it, exit 2."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    image = tmp_path / "im.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.full((32, 32, 3), 100, np.uint8))
    code = cli.main(
        ["segment", "predict", "model=yolo11n-seg.yaml", f"source={image}", f"project={blocker}", "imgsz=32"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot create the output folder" in err and "not-a-folder" in err and "project=" in err
