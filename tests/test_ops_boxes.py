"""Box conversions, IoU and letterbox rescaling (§5.6, §5.7) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from yoloseg.ops.boxes import (
    bbox_iou,
    box_iou,
    clip_boxes,
    letterbox_params,
    scale_boxes,
    scale_coords,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)

XYWH_XYXY = [
    ([10.0, 20.0, 4.0, 6.0], [8.0, 17.0, 12.0, 23.0]),
    ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
    ([5.0, 5.0, 3.0, 1.0], [3.5, 4.5, 6.5, 5.5]),
]


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize(("xywh", "xyxy"), XYWH_XYXY)
def test_xywh_xyxy_roundtrip(kind: str, xywh: list[float], xyxy: list[float]) -> None:
    make = torch.tensor if kind == "torch" else np.array
    a = make([xywh], dtype=torch.float32 if kind == "torch" else np.float32)
    out = xywh2xyxy(a)
    assert type(out) is type(a)
    np.testing.assert_allclose(np.asarray(out)[0], xyxy)
    np.testing.assert_allclose(np.asarray(xyxy2xywh(out))[0], xywh)
    np.testing.assert_allclose(np.asarray(a)[0], xywh)  # input untouched


def test_conversions_empty_and_batched() -> None:
    assert xywh2xyxy(torch.zeros(0, 4)).shape == (0, 4)
    assert xyxy2xywh(np.zeros((0, 4))).shape == (0, 4)
    assert xywh2xyxy(torch.ones(2, 3, 4)).shape == (2, 3, 4)


def test_normalised_conversions() -> None:
    xywhn = np.array([[0.5, 0.5, 0.5, 0.25]])
    xyxy = xywhn2xyxy(xywhn, w=100, h=200, padw=10, padh=5)
    np.testing.assert_allclose(xyxy, [[35.0, 80.0, 85.0, 130.0]])
    np.testing.assert_allclose(xyxy2xywhn(xyxy - [10, 5, 10, 5], w=100, h=200), xywhn)
    clipped = xyxy2xywhn(np.array([[-10.0, 0.0, 50.0, 300.0]]), w=100, h=200, clip=True)
    np.testing.assert_allclose(clipped, [[0.25, 0.5, 0.5, 1.0]])


BOX_IOU_CASES = [
    ([0, 0, 2, 2], [1, 0, 3, 2], 2 / (4 + 4 - 2 + 1e-7)),  # half overlap
    ([0, 0, 2, 2], [2, 0, 4, 2], 0.0),  # touching
    ([0, 0, 2, 2], [5, 5, 6, 6], 0.0),  # disjoint
    ([0, 0, 4, 4], [1, 1, 3, 3], 4 / (16 + 4 - 4 + 1e-7)),  # nested
    ([0, 0, 2, 2], [0, 0, 2, 2], 4 / (4 + 1e-7)),  # identical
]


@pytest.mark.parametrize(("a", "b", "want"), BOX_IOU_CASES)
def test_box_iou_values(a: list[float], b: list[float], want: float) -> None:
    iou = box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))
    assert iou.shape == (1, 1)
    assert iou.dtype == torch.float32
    assert iou.item() == pytest.approx(want, rel=1e-6)


def test_box_iou_shapes_and_empty() -> None:
    a, b = torch.rand(3, 4), torch.rand(5, 4)
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    assert box_iou(a, b).shape == (3, 5)
    torch.testing.assert_close(box_iou(a, b).T, box_iou(b, a))
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 5)
    assert box_iou(a, torch.zeros(0, 4)).shape == (3, 0)


def test_bbox_iou_matches_box_iou_and_broadcasts() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 4, generator=g) * 10, torch.rand(6, 4, generator=g) * 10
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    pairwise = bbox_iou(a[:, None], b[None], xywh=False)
    assert pairwise.shape == (4, 6, 1)
    torch.testing.assert_close(pairwise[..., 0], box_iou(a, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bbox_iou(xyxy2xywh(a), xyxy2xywh(a)), torch.ones(4, 1), atol=1e-5, rtol=0)


def test_ciou_hand_values() -> None:
    box = torch.tensor([[10.0, 10.0, 4.0, 2.0]])
    # concentric boxes of equal aspect ratio: no centre or aspect penalty, CIoU == IoU == 2 / 8
    inner = torch.tensor([[10.0, 10.0, 2.0, 1.0]])
    assert bbox_iou(box, inner, CIoU=True).item() == pytest.approx(0.25, abs=1e-5)
    # same size, shifted by 2 in x: IoU 4/12, rho^2 = 4, enclosing 6 x 2 -> c^2 = 40, v = 0
    shifted = torch.tensor([[12.0, 10.0, 4.0, 2.0]])
    assert bbox_iou(box, shifted, CIoU=True).item() == pytest.approx(1 / 3 - 4 / 40, abs=1e-5)
    # aspect penalty: identical centres, 4x2 vs 2x4 -> IoU 4/12, v = (4/pi^2)(atan(1/2) - atan(2))^2
    turned = torch.tensor([[10.0, 10.0, 2.0, 4.0]])
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2)) ** 2
    iou, rho2, c2 = 1 / 3, 0.0, 32.0
    want = iou - (rho2 / c2 + v * v / (v - iou + 1))
    assert bbox_iou(box, turned, CIoU=True).item() == pytest.approx(want, abs=1e-5)


def test_ciou_has_finite_gradients() -> None:
    pred = torch.tensor([[10.0, 10.0, 4.0, 2.0], [0.0, 0.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[11.0, 9.0, 3.0, 3.0], [50.0, 50.0, 2.0, 2.0]])
    (1 - bbox_iou(pred, target, CIoU=True)).sum().backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_clip_boxes(kind: str) -> None:
    boxes = [[-5.0, -1.0, 50.0, 20.0], [3.0, 4.0, 5.0, 6.0]]
    x = torch.tensor(boxes) if kind == "torch" else np.array(boxes)
    out = clip_boxes(x, (10, 40))
    np.testing.assert_array_equal(np.asarray(out), [[0, 0, 40, 10], [3, 4, 5, 6]])
    assert np.asarray(x)[0, 0] == -5.0  # input untouched
    assert clip_boxes(torch.zeros(0, 4), (10, 10)).shape == (0, 4)


# (letterbox (H, W), original (h0, w0)) -> (gain_x, gain_y, pad_x, pad_y): the §5.3 examples
LETTERBOX_CASES = [
    ((384, 640), (1080, 1920), (640 / 1920, 360 / 1080, 0, 12)),  # 360x640 content, 12 / 12 padding
    ((448, 640), (333, 500), (640 / 500, 426 / 333, 0, 11)),  # 426x640 content (round), 11 / 11
    ((448, 640), (427, 640), (1.0, 1.0, 0, 10)),  # odd padding 21: 10 top, 11 bottom
    ((640, 640), (480, 640), (1.0, 1.0, 0, 80)),
    ((320, 320), (1080, 810), (240 / 810, 320 / 1080, 40, 0)),
]


@pytest.mark.parametrize(("img1", "img0", "want"), LETTERBOX_CASES)
def test_letterbox_params(img1: tuple[int, int], img0: tuple[int, int], want: tuple[float, ...]) -> None:
    assert letterbox_params(img1, img0) == pytest.approx(want)


def test_scale_boxes_predict_path() -> None:
    # 1080x1920 letterboxed into 384x640: gains 1/3, 12 px of padding at the top
    boxes = torch.tensor([[64.0, 48.0, 128.0, 84.0], [-30.0, 0.0, 700.0, 400.0]])
    out = scale_boxes((384, 640), boxes, (1080, 1920))
    torch.testing.assert_close(out[0], torch.tensor([192.0, 108.0, 384.0, 216.0]))
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.0, 1920.0, 1080.0]))  # clamped to the image
    assert out.dtype == torch.float32
    assert boxes[1, 0] == -30.0
    assert scale_boxes((384, 640), torch.zeros(0, 4), (1080, 1920)).shape == (0, 4)


def test_scale_boxes_ratio_pad_and_no_padding() -> None:
    boxes = np.array([[26.0, 16.0, 66.0, 56.0]], dtype=np.float32)
    out = scale_boxes((512, 672), boxes, (480, 640), ratio_pad=((1.0, 1.0), (16, 16)))
    np.testing.assert_allclose(out, [[10.0, 0.0, 50.0, 40.0]])
    out = scale_boxes((512, 672), boxes, (480, 640), ratio_pad=((0.5, 0.25), (16, 16)))
    np.testing.assert_allclose(out, [[40.0, 0.0, 200.0, 80.0]])  # per-axis gains: x / 0.25, y / 0.5
    out = scale_boxes((384, 640), boxes, (1080, 1920), padding=False)
    np.testing.assert_allclose(out, [[78.0, 48.0, 198.0, 168.0]], rtol=1e-6)


def test_scale_coords() -> None:
    points = np.array([[64.0, 48.0], [700.0, -5.0]], dtype=np.float32)
    out = scale_coords((384, 640), points, (1080, 1920))
    np.testing.assert_allclose(out, [[192.0, 108.0], [1920.0, 0.0]])
    assert out.dtype == np.float32
    np.testing.assert_allclose(scale_coords((384, 640), points, (1080, 1920), normalize=True), [[0.1, 0.1], [1, 0]])
    same = scale_coords((100, 100), np.array([[3, 4]]), (100, 100))  # integer input becomes float32
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, [[3.0, 4.0]])
    assert scale_coords((10, 10), np.zeros((0, 2), np.float32), (20, 20)).shape == (0, 2)
    assert isinstance(scale_coords((10, 10), torch.ones(1, 2), (20, 20)), torch.Tensor)
