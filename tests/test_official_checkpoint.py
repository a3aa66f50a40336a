"""Loading Ultralytics-format checkpoints with the restricted unpickler: real files, fakes, and malicious pickles."""

from __future__ import annotations

import builtins
import datetime
import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
import torch
from torch import nn

from yoloseg.nn.checkpoint import load_checkpoint
from yoloseg.nn.official import UnsafeCheckpointError, load_official_checkpoint

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
COCO128 = REFERENCE / "yolo11n-seg-coco128.pt"
SHAPES = REFERENCE / "yolo11n-seg-shapes.pt"
needs_reference = pytest.mark.skipif(
    not (COCO128.is_file() and SHAPES.is_file()),
    reason=f"reference checkpoints not found under {REFERENCE} (the shared/ folder beside the repo is absent)",
)


def _reference_shapes() -> list[tuple[str, list[int]]]:
    """Parse `key [d0,d1,...]` lines ("[]" is a scalar)."""
    rows = []
    for line in (REFERENCE / "yolo11n-seg.state_dict.txt").read_text().splitlines():
        if line.strip():
            key, dims = line.split()
            rows.append((key, [int(d) for d in dims.strip("[]").split(",") if d]))
    return rows


# -- the real reference checkpoints -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco128() -> dict:
    return load_official_checkpoint(COCO128)


@needs_reference
def test_reference_checkpoint_matches_the_recorded_state_dict(coco128: dict) -> None:
    ckpt = coco128
    sd = ckpt["state_dict"]
    expected = _reference_shapes()
    assert list(sd) == [k for k, _ in expected]  # same names, same order
    assert [list(sd[k].shape) for k, _ in expected] == [s for _, s in expected]
    assert sd["model.0.conv.weight"].dtype == torch.float32  # fp16 in the file, float32 by default
    assert sd["model.0.bn.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(sd["model.23.dfl.conv.weight"].flatten(), torch.arange(16, dtype=torch.float32))
    learnable = sum(v.numel() for k, v in sd.items() if "running_" not in k and "num_batches" not in k)
    assert learnable == 2_876_848
    assert len(ckpt["names"]) == 80 and ckpt["names"][0] == "person"
    assert ckpt["yaml"]["scale"] == "n" and ckpt["yaml"]["nc"] == 80 and "backbone" in ckpt["yaml"]
    assert ckpt["task"] == "segment"
    assert ckpt["stride"] == [8.0, 16.0, 32.0]
    assert ckpt["train_args"]["imgsz"] == 320 and ckpt["train_args"]["task"] == "segment"
    assert ckpt["version"] == "8.4.190" and ckpt["epoch"] == -1 and isinstance(ckpt["date"], str)
    assert "metrics/mAP50-95(M)" in ckpt["metrics"]


@needs_reference
def test_shapes_checkpoint_has_four_classes() -> None:
    ckpt = load_official_checkpoint(SHAPES)
    assert len(ckpt["names"]) == 4 and ckpt["yaml"]["nc"] == 4 and ckpt["task"] == "segment"
    assert list(ckpt["state_dict"]) == [k for k, _ in _reference_shapes()]
    assert ckpt["state_dict"]["model.23.cv3.0.2.weight"].shape[0] == 4


@needs_reference
def test_reference_checkpoint_keeps_fp16_on_request_and_loads_through_load_checkpoint(coco128: dict) -> None:
    ckpt = load_checkpoint(COCO128, dtype=None)
    assert ckpt["format"] == "ultralytics" and ckpt["task"] == "segment" and len(ckpt["names"]) == 80
    half = ckpt["state_dict"]
    assert half["model.0.conv.weight"].dtype == torch.float16
    assert torch.equal(coco128["state_dict"]["model.0.conv.weight"], half["model.0.conv.weight"].float())


# -- a fake Ultralytics 8.x best.pt, pickled from stand-in classes registered under ultralytics.* -----------------------
def _fake_classes(monkeypatch: pytest.MonkeyPatch, model_name: str, head_name: str) -> tuple[type, type, type]:
    """Classes pickled under ultralytics.* names (fake modules in sys.modules; Ultralytics itself is never used)."""
    modules = {n: types.ModuleType(n) for n in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks")}
    modules |= {n: types.ModuleType(n) for n in ("ultralytics.nn.modules", "ultralytics.nn.modules.head")}
    modules["ultralytics.utils"] = types.ModuleType("ultralytics.utils")
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)

    def register(cls: type, module: str, name: str) -> type:
        cls.__module__, cls.__name__, cls.__qualname__ = module, name, name
        setattr(modules[module], name, cls)
        return cls

    head = register(type("Head", (nn.Module,), {}), "ultralytics.nn.modules.head", head_name)
    model = register(type("Model", (nn.Module,), {}), "ultralytics.nn.tasks", model_name)
    namespace = register(type("NS", (types.SimpleNamespace,), {}), "ultralytics.utils", "IterableSimpleNamespace")
    return model, head, namespace


def _fake_model(model_cls: type, head_cls: type, namespace: type) -> nn.Module:
    head = head_cls()
    head.conv = nn.Conv2d(8, 6, 1)
    head.register_buffer("anchors_cache", torch.zeros(3), persistent=False)  # must not reach the state dict
    model = model_cls()
    model.model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), head)
    model.stride = torch.tensor([8.0, 16.0, 32.0])
    model.names = ["a", "b"]  # old checkpoints store a list
    model.yaml = {"nc": 2, "scale": "n", "backbone": [], "head": []}
    model.args = namespace(
        imgsz=np.int64(64),
        lr0=np.float64(0.01),
        save_dir=PurePosixPath("runs/detect/train"),
        data=PureWindowsPath("C:/data/coco.yaml"),
        device=torch.device("cpu"),
        started=datetime.datetime(2024, 1, 2, 3, 4, 5),
    )
    return model


def _save_fake(path: Path, model: nn.Module, model_as_ema: bool) -> None:
    ckpt = {
        "date": "2024-01-02T03:04:05",
        "version": "8.1.0",
        "epoch": 7,
        "best_fitness": np.float64(0.5),
        "model": None if model_as_ema else model.half(),
        "ema": model.half() if model_as_ema else None,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "train_args": {"epochs": 3, "project": PurePosixPath("runs"), "batch": np.int32(4)},
        "train_metrics": {"fitness": np.float64(0.25), "per_class": np.array([0.5, 0.75]), "dtype": np.dtype("f4")},
    }
    torch.save(ckpt, path)  # default protocol 2, like the incumbent


@pytest.mark.parametrize("model_as_ema", [False, True])
def test_fake_user_checkpoint_with_exotic_globals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_as_ema: bool
) -> None:
    model = _fake_model(*_fake_classes(monkeypatch, "DetectionModel", "Detect")).half()  # stored as fp16
    expected = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = tmp_path / "best.pt"
    _save_fake(path, model, model_as_ema)
    ckpt = load_official_checkpoint(path)
    assert list(ckpt["state_dict"]) == list(expected)
    assert "model.3.anchors_cache" not in ckpt["state_dict"]
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in expected.items())
    assert ckpt["task"] == "detect" and ckpt["names"] == {0: "a", 1: "b"} and ckpt["stride"] == [8.0, 16.0, 32.0]
    args = ckpt["train_args"]
    assert args["imgsz"] == 64 and type(args["imgsz"]) is int
    assert args["lr0"] == 0.01 and type(args["lr0"]) is float
    assert args["save_dir"] == "runs/detect/train" and args["data"] == "C:\\data\\coco.yaml"
    assert args["device"] == "cpu" and args["started"] == "2024-01-02T03:04:05"
    assert args["epochs"] == 3 and args["project"] == "runs" and args["batch"] == 4
    assert ckpt["epoch"] == 7 and ckpt["best_fitness"] == 0.5 and ckpt["version"] == "8.1.0"
    assert ckpt["metrics"] == {"fitness": 0.25, "per_class": [0.5, 0.75], "dtype": "float32"}
    assert load_checkpoint(path)["format"] == "ultralytics"


def test_task_comes_from_the_head_when_the_model_class_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fake_model(*_fake_classes(monkeypatch, "CustomModel", "Segment"))
    path = tmp_path / "custom.pt"
    _save_fake(path, model, model_as_ema=False)
    assert load_official_checkpoint(path)["task"] == "segment"


def test_big_endian_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file written on a big-endian machine: every storage byte-swapped and `byteorder` = "big"."""
    model_cls, head_cls, _ = _fake_classes(monkeypatch, "SegmentationModel", "Segment")
    model = model_cls()
    model.model = nn.Sequential(nn.Conv2d(3, 4, 1), head_cls())  # float32 only, so every element is 4 bytes
    little, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.save({"model": model}, little)
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.split("/")[-2:-1] == ["data"]:
                data = np.frombuffer(data, dtype="<f4").astype(">f4").tobytes()
            dst.writestr(name, b"big" if name.endswith("/byteorder") else data)
    sd = load_official_checkpoint(big)["state_dict"]
    assert list(sd) == list(model.state_dict()) and all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_legacy_and_non_checkpoint_files_give_clear_errors(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy"):
        load_official_checkpoint(legacy)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a pickle")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_official_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_official_checkpoint(tmp_path / "missing.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with pytest.raises(ValueError, match="no model"):
        load_official_checkpoint(plain)


# -- malicious files: refused before anything runs ----------------------------------------------------------------------
class _Payload:
    """An object whose unpickling would call `func(*args)`."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "system": _Payload(os.system, (f"touch {marker}",)),
        "open": _Payload(builtins.open, (str(marker), "w")),
        "exec": _Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "Popen": _Payload(subprocess.Popen, (["touch", str(marker)],)),
    }


@pytest.mark.parametrize("kind", ["system", "open", "exec", "Popen"])
def test_malicious_plain_pickle_is_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": _payloads(marker)[kind], "epoch": 1}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=kind) as info:
        load_official_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["system", "open", "exec", "Popen"])
def test_malicious_torch_zip_is_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": None, "ema": None, "train_args": {"x": _payloads(marker)[kind]}, "w": torch.ones(3)}
    torch.save(payload, path, pickle_protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=kind):
        load_official_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_allowed_class_names_are_only_inert_stand_ins(tmp_path: Path) -> None:
    """REDUCE on an ultralytics.* global builds a stand-in; it never resolves to real code."""
    path = tmp_path / "odd.pt"
    path.write_bytes(b"\x80\x02cultralytics.utils\nsystem\nX\x05\x00\x00\x00touch\x85R.")
    with pytest.raises(ValueError, match="not a pickled module"):
        load_official_checkpoint(path)
