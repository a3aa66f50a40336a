"""Every example of the guide (reference/guide-segment.md), Python and CLI, run as written with small sizes.

Official weights and the bus.jpg URL are served from 127.0.0.1: the 'official' yolo11n-seg.pt is the reference
checkpoint in the incumbent's format, so the download, the safe loading and the remembered-args paths are real.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from yoloseg import YOLO
from yoloseg.cli import main
from yoloseg.data.synthetic import generate_shapes

from .conftest import shared_path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A local 'release assets' server: yolo11n-seg.pt (reference checkpoint), yolo11n.pt, bus.jpg."""
    root = tmp_path_factory.mktemp("assets")
    shutil.copy(shared_path("reference", "yolo11n-seg-coco128.pt"), root / "yolo11n-seg.pt")
    shutil.copy(shared_path("data", "images", "bus.jpg"), root / "bus.jpg")
    YOLO("yolo11n.yaml").save(root / "yolo11n.pt")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def env(assets, tmp_path, monkeypatch):
    """Weights served locally; the checkpoint's remembered dataset (coco128-seg) under the datasets dir."""
    monkeypatch.setenv("YOLOSEG_WEIGHTS_URL", assets)
    monkeypatch.chdir(tmp_path)
    datasets = Path(os.environ["YOLOSEG_DATASETS_DIR"])
    datasets.mkdir(parents=True, exist_ok=True)
    link = datasets / "coco128-seg"
    if not link.exists():
        link.symlink_to(shared_path("data", "coco128-seg"), target_is_directory=True)
    data = generate_shapes(tmp_path / "tiny", n_train=4, n_val=2, imgsz=64, seed=2)
    return {"url": assets, "data": str(data), "tmp": tmp_path}


SMALL = ["epochs=1", "imgsz=64", "batch=2", "workers=0", "plots=False"]


def test_cli_train_commands(env):
    data = env["data"]
    assert main(["segment", "train", f"data={data}", "model=yolo11n-seg.yaml", *SMALL]) == 0
    assert main(["segment", "train", f"data={data}", "model=yolo11n-seg.pt", *SMALL]) == 0
    assert (env["tmp"] / "yolo11n-seg.pt").exists() or any(Path(os.environ["YOLOSEG_WEIGHTS_DIR"]).glob("*.pt"))
    args = ["segment", "train", f"data={data}", "model=yolo11n-seg.yaml", "pretrained=yolo11n-seg.pt", *SMALL]
    assert main(args) == 0
    runs = Path(os.environ["YOLOSEG_RUNS_DIR"]) / "segment"
    assert sorted(p.name for p in runs.iterdir()) == ["train", "train2", "train3"]
    best = runs / "train" / "weights" / "best.pt"
    assert main(["segment", "val", f"model={best}"]) == 0
    assert main(["segment", "predict", f"model={best}", f"source={data.replace('data.yaml', 'images/val')}"]) == 0
    assert main(["export", f"model={best}", "format=onnx"]) == 0
    assert best.with_suffix(".onnx").is_file()


def test_cli_official_model_val_predict_export(env):
    assert main(["segment", "val", "model=yolo11n-seg.pt", "imgsz=160", "batch=32"]) == 0
    assert main(["segment", "predict", "model=yolo11n-seg.pt", f"source={env['url']}/bus.jpg"]) == 0
    saved = Path(os.environ["YOLOSEG_RUNS_DIR"]) / "segment" / "predict" / "bus.jpg"
    assert saved.is_file()
    assert main(["export", "model=yolo11n-seg.pt", "format=onnx"]) == 0
    assert (Path(os.environ["YOLOSEG_WEIGHTS_DIR"]) / "yolo11n-seg.onnx").is_file()  # beside the downloaded .pt


def test_python_examples(env):
    model = YOLO("yolo11n-seg.yaml")
    model = YOLO("yolo11n-seg.pt")
    model = YOLO("yolo11n-seg.yaml").load("yolo11n.pt")
    model.train(data=env["data"], epochs=1, imgsz=64, batch=2, workers=0, plots=False)

    model = YOLO("yolo11n-seg.pt")
    metrics = model.val(imgsz=160, batch=32, plots=False)
    for value in (metrics.box.map, metrics.box.map50, metrics.box.map75, metrics.seg.map, metrics.seg.map50):
        assert 0.0 <= value <= 1.0
    assert metrics.seg.map75 >= 0.0 and len(metrics.box.maps) == len(metrics.seg.maps) == 80

    results = model(f"{env['url']}/bus.jpg")
    for result in results:
        xy = result.masks.xy
        xyn = result.masks.xyn
        masks = result.masks.data
        assert len(xy) == len(xyn) == masks.shape[0] == len(result.boxes)

    path = model.export(format="onnx")
    assert Path(path).is_file()
