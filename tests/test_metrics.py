"""Matching, AP, the metrics objects and the confusion matrix (§5.8, §1.5): hand-computed values and COCOeval."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch

from yoloseg.metrics import plots
from yoloseg.metrics.ap import IOU_THRESHOLDS, ap_per_class, compute_ap, mask_iou, match_predictions
from yoloseg.metrics.confusion import ConfusionMatrix
from yoloseg.metrics.segment import DetectMetrics, Metric, SegmentMetrics
from yoloseg.ops.boxes import box_iou

T, F = True, False


def test_iou_thresholds() -> None:
    assert IOU_THRESHOLDS.dtype == torch.float32
    assert IOU_THRESHOLDS.tolist() == pytest.approx([0.5 + 0.05 * i for i in range(10)])


def test_mask_iou() -> None:
    gt = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.uint8)
    pred = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.uint8)
    iou = mask_iou(gt, pred)
    assert iou.shape == (2, 2)
    torch.testing.assert_close(iou, torch.tensor([[2 / (3 + 1e-7), 0.0], [1 / (4 + 1e-7), 0.0]]))
    assert mask_iou(torch.zeros(0, 4), pred).shape == (0, 2)


# (IoU (M, N), detection classes, ground-truth classes) -> (N, 10) true positives; detections in confidence order
MATCH_CASES = [
    (  # greedy by confidence, per threshold: det1 takes gt1 where det0 holds gt0
        [[0.9, 0.8, 0.3], [0.6, 0.72, 0.55]],
        [0, 0, 0],
        [0, 0],
        [[T] * 9 + [F], [T] * 5 + [F] * 5, [F] * 10],
    ),
    (  # the more confident detection wins even with the lower IoU
        [[0.62, 0.9]],
        [0, 0],
        [0],
        [[T] * 3 + [F] * 7, [F] * 3 + [T] * 6 + [F]],
    ),
    ([[0.9]], [0], [1], [[F] * 10]),  # class mismatch
    (  # equal IoU: the first unclaimed ground truth
        [[0.8, 0.8], [0.8, 0.8]],
        [0, 0],
        [0, 0],
        [[T] * 7 + [F] * 3, [T] * 7 + [F] * 3],
    ),
    ([[0.4, 0.45]], [0, 0], [0], [[F] * 10, [F] * 10]),  # below 0.5
]


@pytest.mark.parametrize(("iou", "pred_cls", "true_cls", "want"), MATCH_CASES)
def test_match_predictions(iou, pred_cls, true_cls, want) -> None:
    got = match_predictions(torch.tensor(pred_cls), torch.tensor(true_cls), torch.tensor(iou), IOU_THRESHOLDS)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, np.array(want))


def test_match_predictions_empty() -> None:
    assert match_predictions(np.zeros(0), np.array([0]), np.zeros((1, 0))).shape == (0, 10)
    np.testing.assert_array_equal(match_predictions(np.array([0, 1]), np.zeros(0), np.zeros((0, 2))), np.zeros((2, 10)))


def test_match_predictions_claims_per_threshold() -> None:
    # det0 (IoU 0.7 with gt0) claims gt0 up to 0.7 only; at 0.75+ gt0 stays free for det1 (IoU 0.9)
    iou = torch.tensor([[0.7, 0.9]])
    got = match_predictions(torch.tensor([0, 0]), torch.tensor([0]), iou)
    np.testing.assert_array_equal(got[1], [F] * 5 + [T] * 4 + [F])


# (recall, precision) -> AP: 8.4 sentinels make precision 0 at the last recall, trapezoid over 101 points
AP_CASES = [
    ([0.5], [1.0], 0.495),
    ([1.0], [1.0], 0.995),  # 8.3's ramp would give 1.0
    ([0.0], [0.0], 0.0),
    ([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], 0.49 + (1 + 2 / 3) / 200 + 0.49 * 2 / 3 + (2 / 3) / 200),
]


@pytest.mark.parametrize(("recall", "precision", "want"), AP_CASES)
def test_compute_ap(recall: list[float], precision: list[float], want: float) -> None:
    ap, mpre, mrec = compute_ap(np.array(recall), np.array(precision))
    assert ap == pytest.approx(want, abs=1e-9)
    assert mrec.tolist() == [0.0, *recall, recall[-1], 1.0]
    assert np.all(np.diff(mpre) <= 0)  # the envelope never increases


def hand_stats() -> dict[str, np.ndarray]:
    """3 detections of class 0 (conf .9 .8 .7); 2 ground truths of class 0, 1 of class 2 (never predicted)."""
    return {
        "tp_box": np.array([[1] * 10, [0] * 10, [1] * 10], dtype=bool),
        "tp_mask": np.array([[0] * 10, [1] * 10, [1] * 10], dtype=bool),
        "conf": np.array([0.9, 0.8, 0.7]),
        "pred_cls": np.array([0, 0, 0]),
        "target_cls": np.array([0, 0, 2]),
        "target_img": np.array([0, 1, 1]),
    }


AP_BOX_0 = 0.49 + (1 + 2 / 3) / 200 + 0.49 * 2 / 3 + (2 / 3) / 200  # recall .5 .5 1, precision 1 .5 2/3
AP_MASK_0 = 0.99 * 2 / 3 + (2 / 3) / 200  # recall 0 .5 1, precision 0 .5 2/3: envelope 2/3 up to recall 1


def test_ap_per_class_hand_case() -> None:
    s = hand_stats()
    r = ap_per_class(s["tp_box"], s["conf"], s["pred_cls"], s["target_cls"])
    assert r.unique_classes.tolist() == [0, 2]
    np.testing.assert_allclose(r.ap, [[AP_BOX_0] * 10, [0.0] * 10])
    # mean F1 is flat (0.4) below conf 0.7, so the first grid point is chosen: p = 2/3, r = 1 for class 0
    np.testing.assert_allclose(r.p, [2 / 3, 0.0])
    np.testing.assert_allclose(r.r, [1.0, 0.0])
    np.testing.assert_allclose(r.f1, [0.8, 0.0])
    np.testing.assert_allclose(r.tp, [2, 0])
    np.testing.assert_allclose(r.fp, [1, 0])
    assert r.px.shape == (1000,)
    assert r.p_curve.shape == r.r_curve.shape == r.f1_curve.shape == (2, 1000)
    assert r.prec_values.shape == (1, 1000)  # only classes with predictions get a PR curve
    assert r.p_curve[0, -1] == 1.0 and r.r_curve[0, -1] == 0.0  # above the highest confidence


def test_ap_per_class_empty_inputs() -> None:
    r = ap_per_class(np.zeros((0, 10)), np.zeros(0), np.zeros(0), np.zeros(0))
    assert r.ap.shape == (0, 10)
    assert r.prec_values.shape == (1, 1000)
    r = ap_per_class(np.zeros((0, 10)), np.zeros(0), np.zeros(0), np.array([1, 1]))
    np.testing.assert_array_equal(r.ap, np.zeros((1, 10)))
    r = ap_per_class(np.ones((2, 10)), np.array([0.5, 0.6]), np.array([3, 3]), np.zeros(0))
    assert r.ap.shape == (0, 10)  # predictions of classes without ground truth are not scored


def coco_fixture(seed: int = 0, n_images: int = 30, nc: int = 3) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for i in range(n_images):
        images.append({"id": i, "width": 640, "height": 640})
        for _ in range(rng.integers(1, 8)):
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(33, 140, 2)  # area > 32^2: the "all" range equals "medium + large"
            c = int(rng.integers(0, nc))
            ann = {"id": len(annotations) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h]}
            annotations.append({**ann, "area": w * h, "iscrowd": 0})
            for _ in range(rng.integers(0, 3)):  # jittered detections, sometimes of the wrong class
                dx, dy, dw, dh = rng.normal(0, 0.12, 4) * [w, h, w, h]
                cls = c if rng.random() > 0.1 else int(rng.integers(0, nc))
                bbox = [x + dx, y + dy, max(w + dw, 2), max(h + dh, 2)]
                detections.append({"image_id": i, "category_id": cls, "bbox": bbox, "score": float(rng.random())})
        for _ in range(rng.integers(0, 4)):  # false positives
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(20, 140, 2)
            cls = int(rng.integers(0, nc))
            detections.append({"image_id": i, "category_id": cls, "bbox": [x, y, w, h], "score": float(rng.random())})
    categories = [{"id": c, "name": str(c)} for c in range(nc)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_box_ap_agrees_with_cocoeval() -> None:
    """Box mAP50 and mAP50-95 within 0.01 of pycocotools on random detections.

    Where the definitions coincide by construction: no crowd boxes, at most 100 detections per image (COCO's maxDets),
    every class present in the ground truth, the same greedy matching (descending score, best unclaimed IoU).
    Remaining differences, hence the tolerance: COCO averages 101 step samples of the precision envelope while
    §5.8 integrates its linear interpolation with the trapezoid rule and drops precision to 0 at the last recall;
    box_iou adds eps 1e-7.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, detections = coco_fixture()
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    coco_map, coco_map50 = evaluator.stats[:2]

    def xyxy(items: list[dict]) -> torch.Tensor:
        return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in items)]).reshape(-1, 4)

    tp, conf, pred_cls, target_cls = [], [], [], []
    for image in gt["images"]:
        truth = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        dets = sorted((d for d in detections if d["image_id"] == image["id"]), key=lambda d: -d["score"])
        d_cls = np.array([d["category_id"] for d in dets])
        t_cls = np.array([a["category_id"] for a in truth])
        tp.append(match_predictions(d_cls, t_cls, box_iou(xyxy(truth), xyxy(dets)), IOU_THRESHOLDS))
        conf += [d["score"] for d in dets]
        pred_cls.append(d_cls)
        target_cls.append(t_cls)
    r = ap_per_class(np.concatenate(tp), np.array(conf), np.concatenate(pred_cls), np.concatenate(target_cls))
    assert r.ap[:, 0].mean() == pytest.approx(coco_map50, abs=0.01)
    assert r.ap.mean() == pytest.approx(coco_map, abs=0.01)


def test_metric_defaults() -> None:
    m = Metric(nc=3)
    assert m.mean_results() == [0.0, 0.0, 0.0, 0.0]
    assert m.map75 == 0.0 and m.fitness() == 0.0
    np.testing.assert_array_equal(m.maps, np.zeros(3))
    assert len(m.curves_results) == 4 and m.curves == []


def test_segment_metrics_hand_case() -> None:
    s = hand_stats()
    metrics = SegmentMetrics(names={0: "a", 1: "b", 2: "c"})
    metrics.process(s["tp_box"], s["tp_mask"], s["conf"], s["pred_cls"], s["target_cls"], s["target_img"])
    box_map, seg_map = AP_BOX_0 / 2, AP_MASK_0 / 2  # class 2 has ground truth but no predictions: AP 0, counted
    assert metrics.keys == [
        "metrics/precision(B)",
        "metrics/recall(B)",
        "metrics/mAP50(B)",
        "metrics/mAP50-95(B)",
        "metrics/precision(M)",
        "metrics/recall(M)",
        "metrics/mAP50(M)",
        "metrics/mAP50-95(M)",
    ]
    want = [1 / 3, 0.5, box_map, box_map, 1 / 3, 0.5, seg_map, seg_map]
    assert metrics.mean_results() == pytest.approx(want)
    assert list(metrics.results_dict) == [*metrics.keys, "fitness"]
    assert metrics.results_dict["fitness"] == pytest.approx(box_map + seg_map)
    assert metrics.fitness == pytest.approx(box_map + seg_map)
    assert metrics.box.map75 == pytest.approx(box_map)
    np.testing.assert_allclose(metrics.box.maps, [AP_BOX_0, box_map, 0.0])  # class 1: unscored, gets the mean
    np.testing.assert_allclose(metrics.maps, metrics.box.maps + metrics.seg.maps)
    assert metrics.ap_class_index.tolist() == [0, 2]
    assert metrics.class_result(0) == pytest.approx((2 / 3, 1.0, AP_BOX_0, AP_BOX_0, 2 / 3, 1.0, AP_MASK_0, AP_MASK_0))
    assert len(metrics.curves) == 8 and metrics.curves[4] == "Precision-Recall(M)"
    assert len(metrics.curves_results) == 8
    assert metrics.speed == {"preprocess": 0.0, "inference": 0.0, "loss": 0.0, "postprocess": 0.0}
    rows = metrics.summary(decimals=3)
    assert [r["Class"] for r in rows] == ["a", "c"]
    assert rows[0]["Images"] == 2 and rows[0]["Instances"] == 2 and rows[1]["Images"] == 1
    assert rows[0]["Box-P"] == 0.667 and rows[0]["mAP50-95"] == round(AP_BOX_0, 3) and rows[0]["Mask-F1"] == 0.8
    assert json.loads(metrics.to_json()) == metrics.summary()
    table = list(csv.DictReader(io.StringIO(metrics.to_csv())))
    assert [r["Class"] for r in table] == ["a", "c"]


def test_detect_metrics_and_empty_run() -> None:
    s = hand_stats()
    metrics = DetectMetrics(names={0: "a", 1: "b", 2: "c"})
    metrics.process(s["tp_box"], s["conf"], s["pred_cls"], s["target_cls"])
    assert len(metrics.keys) == 4 and len(metrics.curves) == 4
    assert metrics.fitness == pytest.approx(AP_BOX_0 / 2)
    empty = SegmentMetrics(names={0: "a"})
    empty.process(np.zeros((0, 10)), np.zeros((0, 10)), np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty.mean_results() == [0.0] * 8 and empty.fitness == 0.0
    assert empty.summary() == [] and empty.to_csv() == ""


def test_plots_are_written(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "_DPI", 40)  # speed
    s = hand_stats()
    metrics = SegmentMetrics(names={0: "a", 1: "b", 2: "c"}, save_dir=tmp_path, plot=True)
    metrics.process(s["tp_box"], s["tp_mask"], s["conf"], s["pred_cls"], s["target_cls"])
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {f"{k}{c}_curve.png" for k in ("Box", "Mask") for c in ("PR", "F1", "P", "R")}


# one image: gt classes [0, 1, 0]; detections: correct, wrong class, background, below conf
GT_BOXES = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
GT_CLS = torch.tensor([0, 1, 0])
DETECTIONS = torch.tensor(
    [[0.0, 0, 10, 10, 0.9, 0], [20, 20, 30, 31, 0.8, 0], [80, 80, 90, 90, 0.7, 1], [50, 50, 60, 60, 0.1, 0]]
)


def test_confusion_matrix_hand_case() -> None:
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45, names=["a", "b"])
    cm.process_batch(DETECTIONS, GT_BOXES, GT_CLS)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 0, 1], [1, 0, 0]])
    tp, fp = cm.tp_fp()
    np.testing.assert_array_equal(tp, [1, 0])
    np.testing.assert_array_equal(fp, [1, 1])
    rows = cm.summary()
    assert rows[0] == {"Predicted": "a", "a": 1, "b": 1, "background": 0}
    assert json.loads(cm.to_json()) == rows
    assert cm.to_csv().splitlines()[0] == "Predicted,a,b,background"


def test_confusion_matrix_given_ious_and_empty_sides() -> None:
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(DETECTIONS, None, GT_CLS, ious=torch.zeros(3, 4))  # e.g. mask IoU: nothing overlaps
    np.testing.assert_array_equal(cm.matrix, [[0, 0, 2], [0, 0, 1], [2, 1, 0]])
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(None, torch.zeros(0, 4), torch.zeros(0))
    cm.process_batch(DETECTIONS, torch.zeros(0, 4), torch.zeros(0))  # no ground truth: all background
    cm.process_batch(torch.zeros(0, 6), GT_BOXES, GT_CLS)  # no detections: all missed
    np.testing.assert_array_equal(cm.matrix, [[0, 0, 2], [0, 0, 1], [2, 1, 0]])


def test_confusion_matrix_one_to_one() -> None:
    cm = ConfusionMatrix(nc=1)
    dets = torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [0, 0, 10, 9, 0.8, 0]])  # two detections on one object
    cm.process_batch(dets, torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0]))
    np.testing.assert_array_equal(cm.matrix, [[1, 1], [0, 0]])


def test_confusion_matrix_plot(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "_DPI", 40)
    cm = ConfusionMatrix(nc=2, names=["a", "b"])
    cm.process_batch(DETECTIONS, GT_BOXES, GT_CLS)
    assert cm.plot(normalize=True, save_dir=tmp_path).name == "confusion_matrix_normalized.png"
    assert cm.plot(normalize=False, save_dir=tmp_path, names={0: "a", 1: "b"}).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.png", "confusion_matrix_normalized.png"]
