"""NMS against a plain Python greedy reference (§5.4 semantics: stable order, suppress when IoU > thr)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloseg.ops.boxes import xywh2xyxy
from yoloseg.ops.nms import nms, non_max_suppression


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float) -> list[int]:
    """torchvision's CPU algorithm, one kept box at a time: float32 IoU without eps compared (as double) > iou_thres."""
    order = np.array(sorted(range(len(scores)), key=lambda i: -float(scores[i])), dtype=int)  # stable sort
    b = boxes.float().numpy()[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed, keep = np.zeros(len(b), dtype=bool), []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        rest = b[i + 1 :]
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], rest[:, 2]) - np.maximum(b[i, 0], rest[:, 0]))
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], rest[:, 3]) - np.maximum(b[i, 1], rest[:, 1]))
        inter = w * h
        suppressed[i + 1 :] |= (inter / (area[i] + area[i + 1 :] - inter)).astype(np.float64) > iou_thres
    return keep


def random_boxes(n: int, seed: int, extent: float = 200.0, size: float = 60.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size + 1], 1)
    scores = (torch.rand(n, generator=g) * 10).round() / 10  # many ties
    return boxes, scores


def test_nms_empty_and_single() -> None:
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.long
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]


@pytest.mark.parametrize(
    ("thr", "want"),
    [(0.5, [0, 1]), (0.49, [0]), (0.3, [0])],  # IoU of the two boxes is exactly 0.5: kept unless IoU > thr
)
def test_nms_threshold_is_strict(thr: float, want: list[int]) -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), thr).tolist() == want


def test_nms_ties_keep_input_order() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 10, 10], [50.0, 50, 60, 60]])
    assert nms(boxes, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0, 2]
    assert nms(boxes[[1, 0, 2]], torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_reference(seed: int) -> None:
    n = [0, 1, 40, 300, 500, 700][seed]
    boxes, scores = random_boxes(n, seed)
    for thr in (0.3, 0.45, 0.7):
        assert nms(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)


def test_nms_small_path_equals_block_path(monkeypatch) -> None:
    """Up to _SMALL CPU boxes skip the blocks (one IoU matrix, a greedy pass in NumPy): the same kept boxes as the
    block path, including IoUs that land exactly on the threshold, max_keep, and degenerate (zero-area, identical)
    boxes."""
    import yoloseg.ops.nms as nms_module

    cases = [random_boxes(n, 100 + n, extent=40, size=30) for n in (2, 3, 5, 8, 17, 32)]
    grid = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 5, 10], [5, 0, 15, 10], [0, 0, 0, 0], [0, 0, 10, 10]])
    cases.append((grid, torch.tensor([0.9, 0.8, 0.8, 0.7, 0.6, 0.5])))  # IoUs 0.5, 1/3, 0 and 1
    for boxes, scores in cases:
        for thr in (0.0, 1 / 3, 0.45, 0.5, 0.7):
            for max_keep in (None, 1, 2):
                small = nms(boxes, scores, thr, max_keep=max_keep)
                with monkeypatch.context() as m:
                    m.setattr(nms_module, "_SMALL", 0)
                    block = nms(boxes, scores, thr, max_keep=max_keep)
                assert torch.equal(small, block), (len(boxes), thr, max_keep)
                assert small.tolist() == reference_nms(boxes, scores, thr)[:max_keep]


def test_nms_class_offsets_and_chains() -> None:
    # many classes separated by offsets (exercises the independent x-groups), and a long suppression chain
    boxes, scores = random_boxes(800, 7, extent=100, size=40)
    boxes = boxes + (torch.arange(800) % 9)[:, None].float() * 7680
    assert nms(boxes, scores, 0.5).tolist() == reference_nms(boxes, scores, 0.5)
    x = torch.arange(600, dtype=torch.float32) * 0.5
    chain = torch.stack([x, torch.zeros(600), x + 10, torch.full((600,), 10.0)], 1)
    chain_scores = torch.linspace(1, 0, 600)
    assert nms(chain, chain_scores, 0.9).tolist() == reference_nms(chain, chain_scores, 0.9)


def test_nms_score_order_pass_equals_the_grouped_pass(monkeypatch) -> None:
    """Up to _GLOBAL_LIMIT boxes to keep, one pass in score order stops at the limit; above it, x-groups run. Both
    give the greedy result, here over class-offset boxes as val's multi-label NMS sees them."""
    import yoloseg.ops.nms as nms_module

    boxes, scores = random_boxes(3000, 11, extent=300, size=60)
    boxes = boxes + (torch.arange(3000) % 13)[:, None].float() * 7680
    for thr, max_keep in ((0.7, 300), (0.45, 300), (0.7, 1024), (0.3, 5)):
        ordered = nms(boxes, scores, thr, max_keep=max_keep)
        with monkeypatch.context() as m:
            m.setattr(nms_module, "_GLOBAL_LIMIT", 0)
            grouped = nms(boxes, scores, thr, max_keep=max_keep)
        assert torch.equal(ordered, grouped), (thr, max_keep)
        assert ordered.tolist() == reference_nms(boxes, scores, thr)[:max_keep]


def test_nms_max_keep_is_a_prefix() -> None:
    boxes, scores = random_boxes(1000, 8)
    full = nms(boxes, scores, 0.5)
    for k in (1, 10, 300, 5000):
        assert torch.equal(nms(boxes, scores, 0.5, max_keep=k), full[:k])


def test_nms_30000_boxes_greedy_prefix() -> None:
    """30,000 boxes with max_keep: the kept prefix is exactly greedy (checked without the quadratic reference)."""
    boxes, scores = random_boxes(30000, 9, extent=3000, size=80)
    scores = torch.rand(30000, generator=torch.Generator().manual_seed(1))
    keep = nms(boxes, scores, 0.6, max_keep=300)
    assert len(keep) == 300
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    last = int(rank[keep].max())
    assert torch.equal(rank[keep], torch.sort(rank[keep]).values)  # descending score order
    kept = torch.zeros(30000, dtype=torch.bool)
    kept[keep] = True
    b = boxes.float()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def iou(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:  # (len(i), len(j))
        w = (torch.minimum(b[i, None, 2], b[None, j, 2]) - torch.maximum(b[i, None, 0], b[None, j, 0])).clamp(min=0)
        h = (torch.minimum(b[i, None, 3], b[None, j, 3]) - torch.maximum(b[i, None, 1], b[None, j, 1])).clamp(min=0)
        return w * h / (area[i, None] + area[None, j] - w * h)

    earlier = rank[keep][:, None] < rank[None, keep]
    assert not ((iou(keep, keep) > 0.6) & earlier).any()  # no kept box suppresses a later kept one
    dropped = order[: last + 1][~kept[order[: last + 1]]]
    suppressor = (iou(keep, dropped) > 0.6) & (rank[keep][:, None] < rank[None, dropped])
    assert suppressor.any(0).all()  # every box skipped before the last kept one was suppressed by a kept one


def reference_postprocess(pred: torch.Tensor, conf: float, iou: float, nc: int, **kw) -> list[torch.Tensor]:
    """§5.4 written out directly: all rows, class filter, stable top-max_nms, class offsets, reference NMS."""
    out = []
    for x in pred.transpose(1, 2):
        box, cls, coef = xywh2xyxy(x[:, :4]), x[:, 4 : 4 + nc], x[:, 4 + nc :]
        if kw.get("multi_label") and nc > 1:
            rows = [
                torch.cat([box[a], cls[a, c, None], torch.tensor([float(c)]), coef[a]])
                for a in range(len(x))
                for c in range(nc)
                if cls[a, c] > conf
            ]
        else:
            rows = [
                torch.cat([box[a], cls[a].max()[None], cls[a].argmax()[None].float(), coef[a]])
                for a in range(len(x))
                if cls[a].max() > conf
            ]
        r = torch.stack(rows) if rows else torch.zeros(0, 6 + coef.shape[1])
        if kw.get("classes") is not None:
            r = r[torch.isin(r[:, 5], torch.tensor(kw["classes"], dtype=r.dtype))]
        r = r[torch.sort(r[:, 4], descending=True, stable=True).indices[: kw.get("max_nms", 30000)]]
        offsets = r[:, 5:6] * (0 if kw.get("agnostic") else 7680)
        out.append(r[reference_nms(r[:, :4] + offsets, r[:, 4], iou)[: kw.get("max_det", 300)]])
    return out


def make_prediction(bs: int, nc: int, nm: int, anchors: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(bs, 2, anchors, generator=g) * 120
    wh = torch.rand(bs, 2, anchors, generator=g) * 40 + 2
    scores = (torch.rand(bs, nc, anchors, generator=g) * 20).round() / 20  # ties, and scores equal to conf
    return torch.cat([xy, wh, scores, torch.randn(bs, nm, anchors, generator=g)], 1)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"multi_label": True},
        {"agnostic": True},
        {"classes": [0, 2]},
        {"multi_label": True, "max_nms": 37, "max_det": 5},
        {"multi_label": True, "classes": [1], "agnostic": True},
    ],
)
def test_non_max_suppression_matches_reference(kw: dict) -> None:
    pred = make_prediction(2, 3, 4, 60, seed=len(str(kw)))
    got = non_max_suppression(pred, 0.25, 0.5, nc=3, **kw)
    want = reference_postprocess(pred, 0.25, 0.5, nc=3, **kw)
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g.shape[1] == 4 + 2 + 4
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_non_max_suppression_hand_case() -> None:
    # anchors: two overlapping boxes of class 1, one far box whose best score equals conf (not > conf), one class-0
    xywh = torch.tensor([[10.0, 10, 10, 10], [11, 10, 10, 10], [100, 100, 10, 10], [10, 10, 10, 10]])
    scores = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.25, 0.1], [0.6, 0.3]])
    coeffs = torch.arange(8, dtype=torch.float32).view(4, 2)
    pred = torch.cat([xywh, scores, coeffs], 1).T[None]  # (1, 4 + 2 + 2, 4)
    (out,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.5, nc=2)
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[:, 4], torch.tensor([0.9, 0.6]))
    torch.testing.assert_close(out[:, 5], torch.tensor([1.0, 0.0]))  # class-aware: box 3 survives box 0
    torch.testing.assert_close(out[0, :4], torch.tensor([5.0, 5.0, 15.0, 15.0]))
    torch.testing.assert_close(out[:, 6:], coeffs[[0, 3]])
    (agnostic,) = non_max_suppression(pred, 0.25, 0.5, nc=2, agnostic=True)
    assert agnostic[:, 4].tolist() == pytest.approx([0.9])
    (multi,) = non_max_suppression(pred, 0.25, 0.5, nc=2, multi_label=True)
    assert multi[:, 4].tolist() == pytest.approx([0.9, 0.6])  # box 3 as class 1 (0.3) is suppressed by box 0


def test_non_max_suppression_shapes() -> None:
    pred = make_prediction(3, 4, 0, 30, seed=11)
    as_tuple = non_max_suppression((pred, torch.zeros(1)), 0.25, 0.5)  # nc=0: every channel after the box
    assert all(o.shape[1] == 6 for o in as_tuple)
    for a, b in zip(as_tuple, non_max_suppression(pred, 0.25, 0.5, nc=4)):
        assert torch.equal(a, b)
    assert all(len(o) <= 2 for o in non_max_suppression(pred, 0.25, 0.5, max_det=2))
    empty = non_max_suppression(make_prediction(2, 3, 5, 10, seed=12), conf_thres=1.0, nc=3)
    assert [o.shape for o in empty] == [(0, 11), (0, 11)]
    assert non_max_suppression(torch.zeros(0, 7, 10), nc=3) == []
