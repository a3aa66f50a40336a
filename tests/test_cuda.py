"""CUDA paths: device strings, AMP training (fp16 with a grad scaler, and bf16), half-precision val and predict.

CI has no GPU, so these skip there; on a GPU machine run `python -m pytest -q tests/test_cuda.py`.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from yoloseg import YOLO
from yoloseg.data.synthetic import generate_shapes
from yoloseg.nn.graph import YOLOModel
from yoloseg.utils.torch_utils import select_device

from .conftest import shared_path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: these tests need a GPU")


def test_device_strings():
    for text in (0, "0", "cuda:0", "cuda", "0,", None):
        assert select_device(text) == torch.device("cuda:0")
    assert select_device("cpu") == torch.device("cpu")


def test_forward_cuda_matches_cpu():
    torch.manual_seed(0)
    model = YOLOModel("yolo11n-seg.yaml").eval()
    x = torch.rand(2, 3, 160, 160)
    with torch.inference_mode():
        y_cpu, p_cpu = model(x)
        model_gpu = model.to("cuda")
        y_gpu, p_gpu = model_gpu(x.cuda())
        y_half, _ = model_gpu.half()(x.cuda().half())
    scale = y_cpu.abs().max()
    # cuDNN may use TF32 for fp32 convolutions: allow its ~1e-3 relative error, and ~1e-2 for fp16
    assert ((y_gpu.cpu() - y_cpu).abs().max() / scale) < 5e-3
    assert ((p_gpu.cpu() - p_cpu).abs().max() / p_cpu.abs().max()) < 5e-3
    assert ((y_half.float().cpu() - y_cpu).abs().max() / scale) < 3e-2


@pytest.mark.parametrize("amp", [True, "bf16"])
def test_amp_training(tmp_path, amp):
    data = generate_shapes(tmp_path / "shapes", n_train=16, n_val=8, imgsz=128, seed=1)
    seen = {}

    def on_train_start(trainer):
        seen["amp"], seen["dtype"], seen["scaler"] = trainer.amp, trainer.amp_dtype, trainer.scaler.is_enabled()

    def on_train_batch_end(trainer):
        seen["param_dtype"] = next(trainer.model.parameters()).dtype

    model = YOLO("yolo11n-seg.yaml")
    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", on_train_batch_end)
    model.train(
        data=str(data), epochs=3, imgsz=128, batch=8, device=0, amp=amp, workers=2, plots=amp is True, seed=0,
        project=str(tmp_path), name="run", exist_ok=True,
    )  # fmt: skip
    assert seen["amp"] is True
    assert seen["dtype"] == (torch.bfloat16 if amp == "bf16" else torch.float16)
    assert seen["scaler"] is (amp is True)  # a grad scaler for fp16 only
    assert seen["param_dtype"] == torch.float32  # master weights stay fp32
    with open(tmp_path / "run" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    losses = [float(r[k]) for r in rows for k in r if k.startswith("train/")]
    assert all(math.isfinite(v) for v in losses)
    ckpt = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == -1  # stripped at the end of training
    reloaded = YOLO(str(tmp_path / "run" / "weights" / "best.pt"))
    metrics = reloaded.val(data=str(data), imgsz=128, batch=8, device=0, plots=False, project=str(tmp_path))
    assert math.isfinite(metrics.seg.map50)


@pytest.mark.parametrize("half", [False, True])
def test_val_on_cuda_matches_reference(tmp_path, half):
    golden = json.loads(shared_path("reference", "golden", "yolo11n-seg-shapes.val-metrics.json").read_text())
    ref = next(g for g in golden if g["dataset"] == "shapes-ref-seg" and g["imgsz"] == 256)["results"]
    model = YOLO(str(shared_path("reference", "yolo11n-seg-shapes.pt")))
    data = shared_path("data", "shapes-ref-seg", "data.yaml")
    m = model.val(data=str(data), imgsz=256, batch=16, device=0, half=half, plots=False, project=str(tmp_path))
    tol = 0.01 if half else 0.003  # fp16 / TF32 arithmetic moves a few scores across thresholds
    for key in ("metrics/mAP50(B)", "metrics/mAP50-95(B)", "metrics/mAP50(M)", "metrics/mAP50-95(M)"):
        assert m.results_dict[key] == pytest.approx(ref[key], abs=tol), key


def test_predict_half_matches_cpu():
    model = YOLO(str(shared_path("reference", "yolo11n-seg-shapes.pt")))
    image = sorted(shared_path("data", "shapes-ref-seg", "images", "val").glob("*.jpg"))[0]
    cpu = model.predict(str(image), imgsz=256, device="cpu", verbose=False)[0]
    gpu = model.predict(str(image), imgsz=256, device=0, half=True, verbose=False)[0]
    assert len(cpu.boxes) > 0
    assert len(gpu.boxes) == len(cpu.boxes)
    assert np.abs(gpu.boxes.xyxy.cpu().numpy() - cpu.boxes.xyxy.cpu().numpy()).max() < 2.0
    inter = (gpu.masks.data.cpu().bool() & cpu.masks.data.bool()).sum()
    union = (gpu.masks.data.cpu().bool() | cpu.masks.data.bool()).sum()
    assert inter / union > 0.97
