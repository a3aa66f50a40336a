"""Validation agrees with the reference implementation on the same weights (golden/*.val-metrics.json)."""

from __future__ import annotations

import json

import pytest
import torch

from yoloseg import YOLO

from .conftest import shared_path

KEYS = ("metrics/mAP50(B)", "metrics/mAP50-95(B)", "metrics/mAP50(M)", "metrics/mAP50-95(M)")
CASES = [("yolo11n-seg-shapes", "shapes-ref-seg", 256), ("yolo11n-seg-coco128", "coco8-seg", 320)]


@pytest.mark.parametrize("checkpoint,dataset,imgsz", CASES)
def test_val_metrics_match_reference(checkpoint, dataset, imgsz, tmp_path):
    golden = json.loads(shared_path("reference", "golden", f"{checkpoint}.val-metrics.json").read_text())
    ref = next(g for g in golden if g["dataset"] == dataset and g["imgsz"] == imgsz)
    model = YOLO(str(shared_path("reference", f"{checkpoint}.pt")))
    data = shared_path("data", dataset, "data.yaml")
    metrics = model.val(data=str(data), imgsz=imgsz, batch=ref["batch"], plots=False, project=str(tmp_path))
    for key in KEYS:
        assert metrics.results_dict[key] == pytest.approx(ref["results"][key], abs=1e-4), key
    assert metrics.box.map75 == pytest.approx(ref["box_map75"], abs=1e-4)
    assert metrics.seg.map75 == pytest.approx(ref["seg_map75"], abs=1e-4)
    for cls, value in ref["seg_maps_present"].items():
        assert metrics.seg.maps[int(cls)] == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("checkpoint,dataset,imgsz", CASES)
def test_masks_skipped_where_they_cannot_count_change_nothing(checkpoint, dataset, imgsz, tmp_path, monkeypatch):
    """Val computes masks only for detections near a GT box of their class or at conf >= 0.25; metrics, per-class
    maps and the confusion matrix equal those of computing every mask."""
    import numpy as np

    from yoloseg.engine import validator

    def run(tag: str):
        model = YOLO(str(shared_path("reference", f"{checkpoint}.pt")))
        data = shared_path("data", dataset, "data.yaml")
        return model.val(data=str(data), imgsz=imgsz, batch=8, plots=False, project=str(tmp_path), name=tag)

    calls = {"masks": 0}
    original = validator.process_mask

    def counting(protos, coeffs, boxes, shape, upsample=False, crop=True):
        calls["masks"] += len(coeffs)
        return original(protos, coeffs, boxes, shape, upsample=upsample, crop=crop)

    monkeypatch.setattr(validator, "process_mask", counting)
    skipped = run("skipped")
    computed_skipped = calls["masks"]
    postprocess = validator.Validator.postprocess
    monkeypatch.setattr(
        validator.Validator, "postprocess", lambda self, y, p, s, g=None, b=None: postprocess(self, y, p, s, None, b)
    )
    calls["masks"] = 0
    full = run("full")
    assert computed_skipped < 0.5 * calls["masks"]  # far fewer masks were computed ...
    assert skipped.results_dict == full.results_dict  # ... with the same results
    assert np.array_equal(skipped.seg.maps, full.seg.maps)
    assert np.array_equal(skipped.confusion_matrix.matrix, full.confusion_matrix.matrix)


@pytest.mark.parametrize("checkpoint,dataset,imgsz", CASES)
def test_deferred_head_gives_the_full_heads_metrics(checkpoint, dataset, imgsz, tmp_path, monkeypatch):
    """CPU val runs the head's box, coefficient and prototype branches only where they are read (engine.deferred):
    the metrics, per-class maps and confusion matrix equal those of the whole head, to the last bit, and so do the
    input-resolution masks of save_json (coco8: 4 images). Coefficients are computed only for the rows whose masks
    can count (all of them for save_json)."""
    import numpy as np

    from yoloseg.engine import deferred, validator

    save_json = dataset == "coco8-seg"

    def run(tag: str):
        model = YOLO(str(shared_path("reference", f"{checkpoint}.pt")))
        data = shared_path("data", dataset, "data.yaml")
        kw = {"batch": 16, "plots": False, "project": str(tmp_path), "name": tag, "save_json": save_json}
        return model.val(data=str(data), imgsz=imgsz, **kw)

    calls = {"boxes": 0}
    complete_boxes = deferred.DeferredBranches.complete_boxes

    def counting(self, out, conf):
        calls["boxes"] += 1
        return complete_boxes(self, out, conf)

    complete_coeffs = deferred.DeferredBranches.complete_coeffs

    def counting_coeffs(self, preds, levels, wanted):
        calls["rows"] = calls.get("rows", 0) + sum(len(p) for p in preds)
        calls["wanted"] = calls.get("wanted", 0) + sum(
            len(p) if w is None else int(w.sum()) for p, w in zip(preds, wanted)
        )
        return complete_coeffs(self, preds, levels, wanted)

    monkeypatch.setattr(deferred.DeferredBranches, "complete_boxes", counting)
    monkeypatch.setattr(deferred.DeferredBranches, "complete_coeffs", counting_coeffs)
    lazy = run("deferred")
    assert calls["boxes"] >= 1  # the deferred path ran
    assert calls["wanted"] == calls["rows"] if save_json else calls["wanted"] < 0.5 * calls["rows"]
    monkeypatch.setattr(validator, "defer_head", lambda model: None)
    whole = run("whole")
    assert lazy.results_dict == whole.results_dict
    assert np.array_equal(lazy.seg.maps, whole.seg.maps) and np.array_equal(lazy.box.maps, whole.box.maps)
    assert np.array_equal(lazy.confusion_matrix.matrix, whole.confusion_matrix.matrix)
    if save_json:
        saved = [(tmp_path / tag / "predictions.json").read_text() for tag in ("deferred", "whole")]
        assert len(saved[0]) > 1000 and saved[0] == saved[1]


def test_large_cpu_val_runs_a_graph_with_the_same_metrics(tmp_path, monkeypatch):
    """Standalone CPU val of a dataset of VAL_GRAPH_MIN_IMAGES or more (lowered here) traces the model into a
    TorchScript graph once, before timing: the same metrics as eager; a smaller dataset or jit=False stays eager."""
    from yoloseg.engine import inference, validator

    traced = []
    real_trace = inference.CompiledForward._trace
    monkeypatch.setattr(
        inference.CompiledForward, "_trace", lambda self, x: traced.append(x.shape) or real_trace(self, x)
    )
    data = str(shared_path("data", "shapes-ref-seg", "data.yaml"))

    def run(tag: str, **kw):
        model = YOLO(str(shared_path("reference", "yolo11n-seg-shapes.pt")))
        return model.val(data=data, imgsz=160, batch=16, plots=False, project=str(tmp_path), name=tag, **kw)

    small = run("small")
    assert not traced
    monkeypatch.setattr(validator, "VAL_GRAPH_MIN_IMAGES", 10)
    off = run("off", jit=False)
    assert not traced
    graph = run("graph")
    assert len(traced) == 1 and traced[0][0] <= 16  # once, at a CPU micro-batch
    for key in KEYS:
        assert graph.results_dict[key] == pytest.approx(small.results_dict[key], abs=1e-4), key
        assert off.results_dict[key] == small.results_dict[key], key


def test_near_same_class_gt():
    from yoloseg.engine.validator import NEAR_GT_PX, _near_same_class_gt

    det = torch.tensor(
        [
            [10, 10, 50, 50, 0.1, 0],  # overlaps GT 0, same class
            [10, 10, 50, 50, 0.1, 1],  # overlaps GT 0, other class
            [60 + NEAR_GT_PX - 1, 10, 90, 50, 0.1, 0],  # within the margin right of GT 0
            [60 + NEAR_GT_PX, 10, 90, 50, 0.1, 0],  # just beyond it
            [200, 200, 220, 220, 0.1, 1],  # overlaps GT 1 (class 1)
        ],
        dtype=torch.float32,
    )
    gt_cls, gt_boxes = torch.tensor([0.0, 1.0]), torch.tensor([[20.0, 20, 60, 60], [190.0, 190, 210, 210]])
    assert _near_same_class_gt(det, gt_cls, gt_boxes).tolist() == [True, False, True, False, True]
    assert not _near_same_class_gt(det, gt_cls[:0], gt_boxes[:0]).any()
    # with GT mask areas: also only where the widened boxes' overlap can hold half the GT mask (IoU >= 0.5 possible)
    reach = (50 - 20 + 2 * NEAR_GT_PX) ** 2  # row 0's widened overlap with GT 0
    areas = torch.tensor([2.0 * reach, 20.0 * 20])
    assert _near_same_class_gt(det, gt_cls, gt_boxes, areas).tolist() == [True, False, False, False, True]
    areas[0] = 2.0 * reach + 1  # just out of reach
    assert _near_same_class_gt(det, gt_cls, gt_boxes, areas).tolist() == [False, False, False, False, True]


def test_half_val_on_a_bf16_cpu_stays_close_to_fp32(tmp_path, monkeypatch):
    """half=True val on a CPU with bf16 hardware (forced here; emulated, so slower) autocasts the convolutions:
    the metrics move by little (the accuracy impact of the option; bench/ measures it on real hardware)."""
    import yoloseg.engine.inference as inference

    data = str(shared_path("data", "shapes-ref-seg", "data.yaml"))

    def run(tag: str, half: bool):
        model = YOLO(str(shared_path("reference", "yolo11n-seg-shapes.pt")))
        return model.val(data=data, imgsz=160, batch=16, half=half, plots=False, project=str(tmp_path), name=tag)

    fp32 = run("fp32", False)
    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: True)
    calls, inputs = [], []
    monkeypatch.setattr(torch, "autocast", _spy(torch.autocast, calls))
    forward = inference.CompiledForward.__call__
    monkeypatch.setattr(
        inference.CompiledForward, "__call__", lambda f, x, **kw: (inputs.append(x.dtype), forward(f, x, **kw))[1]
    )
    bf16 = run("bf16", True)
    assert any(c == ("cpu", torch.bfloat16) for c in calls)
    assert inputs and set(inputs) == {torch.bfloat16}  # images cast to bf16 where read (the first convolution's cast)
    assert bf16.results_dict != fp32.results_dict  # it did run in another precision ...
    for key in KEYS:  # ... at nearly the same accuracy
        assert bf16.results_dict[key] == pytest.approx(fp32.results_dict[key], abs=0.01), key


def _spy(fn, calls):
    def wrapper(device_type, dtype=None, *args, **kwargs):
        calls.append((device_type, dtype))
        return fn(device_type, dtype, *args, **kwargs) if dtype is not None else fn(device_type, *args, **kwargs)

    return wrapper
