"""Our checkpoint format: round trip with weights_only=True, validation, atomic saves, errors, weight transfer."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yoloseg.nn.checkpoint import intersect_state_dicts, load_checkpoint, save_checkpoint, to_saveable


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def _ckpt(model: nn.Module) -> dict:
    return {
        "state_dict": model.state_dict(),
        "yaml": {"nc": 2, "scale": "n", "backbone": [[-1, 1, "Conv", [64, 3, 2]]], "head": []},
        "names": {0: "cat", 1: "dog"},
        "task": "segment",
        "train_args": types.SimpleNamespace(imgsz=np.int64(64), lr0=np.float32(0.5), save_dir=Path("runs/x")),
        "epoch": 3,
        "best_fitness": np.float64(0.25),
        "metrics": {"metrics/mAP50(M)": 0.5},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.01, "params": [0]}]},
        "stride": torch.tensor([8.0, 16.0, 32.0]).tolist(),
    }


def test_round_trip_is_plain_and_weights_only(tmp_path: Path) -> None:
    model = _model()
    path = save_checkpoint(tmp_path / "last.pt", _ckpt(model))
    raw = torch.load(path, weights_only=True)  # nothing but tensors and plain data inside
    assert raw["format"] == "yoloseg" and "model_yaml" in raw and "yaml" not in raw
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "yoloseg" and ckpt["task"] == "segment" and ckpt["names"] == {0: "cat", 1: "dog"}
    assert ckpt["yaml"]["scale"] == "n" and ckpt["epoch"] == 3 and ckpt["best_fitness"] == 0.25
    assert ckpt["train_args"] == {"imgsz": 64, "lr0": 0.5, "save_dir": "runs/x"}
    assert isinstance(ckpt["version"], str) and isinstance(ckpt["date"], str)
    assert torch.equal(ckpt["optimizer"]["state"][0]["momentum_buffer"], torch.zeros(2))
    assert list(ckpt["state_dict"]) == list(model.state_dict())
    fresh = _model()
    fresh.load_state_dict(ckpt["state_dict"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_state_dict_dtype_on_load(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "half.pt", {"state_dict": _model().half().state_dict()})
    assert load_checkpoint(path)["state_dict"]["0.weight"].dtype == torch.float32
    kept = load_checkpoint(path, dtype=None)["state_dict"]
    assert kept["0.weight"].dtype == torch.float16 and kept["1.num_batches_tracked"].dtype == torch.int64


def test_bare_state_dict_loads(tmp_path: Path) -> None:
    torch.save(_model().state_dict(), tmp_path / "sd.pt")
    ckpt = load_checkpoint(tmp_path / "sd.pt")
    assert ckpt["format"] == "state_dict" and ckpt["names"] == {} and "0.weight" in ckpt["state_dict"]


@pytest.mark.parametrize(
    ("bad", "where"),
    [({"model": nn.Conv2d(1, 1, 1)}, "ckpt['model']"), ({"args": {"cb": object()}}, "ckpt['args']['cb']")],
)
def test_objects_are_refused(tmp_path: Path, bad: dict, where: str) -> None:
    with pytest.raises(TypeError, match=re.escape(where)):
        save_checkpoint(tmp_path / "x.pt", bad)
    assert not (tmp_path / "x.pt").exists()


def test_to_saveable_conversions() -> None:
    out = to_saveable({"p": Path("a/b"), "n": np.int16(3), "a": np.ones(2), "s": {1}, "d": torch.device("cpu")})
    assert out["p"] == "a/b" and type(out["n"]) is int and out["s"] == [1] and out["d"] == "cpu"
    assert isinstance(out["a"], torch.Tensor)


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "best.pt", {"state_dict": {"w": torch.ones(3)}, "epoch": 1})
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj: object, f: str | Path) -> None:
        real_save(obj, f)
        Path(f).write_bytes(Path(f).read_bytes()[:100])  # half a file, then the process "dies"
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"state_dict": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_missing_file_error_names_the_path_and_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert "yolo11n-seg.pt" in str(info.value)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_file_gives_value_error_naming_it(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", {"state_dict": {"w": torch.ones(100)}})
    data = {"truncate": path.read_bytes()[:-200], "empty": b"", "garbage": b"\x00not a checkpoint at all"}[damage]
    path.write_bytes(data)
    with pytest.raises(ValueError, match="ckpt.pt"):
        load_checkpoint(path)


def test_intersect_state_dicts() -> None:
    src = {
        "a.weight": torch.ones(2, 3),
        "b.weight": torch.ones(4),
        "head.cls": torch.ones(80),
        "only_src": torch.ones(1),
    }
    dst = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(5), "head.cls": torch.zeros(80), "only_dst": 0}
    assert list(intersect_state_dicts(src, dst)) == ["a.weight", "head.cls"]
    assert list(intersect_state_dicts(src, dst, exclude=("head",))) == ["a.weight"]
    assert intersect_state_dicts({}, dst) == {}
