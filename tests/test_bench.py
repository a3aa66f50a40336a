"""The same-machine comparison (bench/incumbent_config.py) rebuilds the incumbent's predict path from yoloseg's parts:
it must do the same job as yoloseg's predictor, or its timings compare nothing."""

import sys
from pathlib import Path

import pytest

from .conftest import shared_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for the bench package


def test_rebuilt_incumbent_predict_path_finds_what_yoloseg_finds():
    from bench.incumbent_config import check_same_job, incumbent_pytorch
    from bench.predict_latency import load_reference_model
    from yoloseg.engine.predictor import Predictor

    weights, image = shared_path("reference", "yolo11n-seg-coco128.pt"), shared_path("data", "images", "bus.jpg")
    model = load_reference_model(weights)
    rebuilt = incumbent_pytorch(model, model.names)
    fused = rebuilt.forward  # the incumbent's model: BN folded, NCHW, the whole head
    assert fused.is_fused() and not any(getattr(m, "defer_branches", False) for m in fused.modules())
    ours = Predictor(model, {"imgsz": 640, "verbose": False, "device": "cpu"}).predict
    check = check_same_job(ours, rebuilt, str(image))  # raises when the detections or boxes differ
    assert check["detections"] >= 1
    a, b = check["polygon_points"]
    assert len(a) == len(b) and all(abs(x - y) <= max(x, y) * 0.5 for x, y in zip(a, b))
    (r,) = rebuilt(str(image))
    assert set(r.speed) == {"preprocess", "inference", "postprocess"} and r.masks.data.shape[1:] == (640, 480)


def test_rebuilt_incumbent_path_check_fails_on_a_different_job():
    from bench.incumbent_config import check_same_job

    class Fake:
        def __init__(self, n):
            self.n = n

        def __call__(self, path):
            return [[0] * self.n]

    with pytest.raises(RuntimeError, match="detections"):
        check_same_job(Fake(2), Fake(1), "x.jpg")
