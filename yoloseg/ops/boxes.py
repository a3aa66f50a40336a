"""Box format conversions, IoU, clipping and letterbox <-> original-image rescaling.

Every function accepts a torch tensor or a numpy array (except the IoU functions, which are torch only) and returns
a new object of the same kind; inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)
RatioPad = Sequence[Any] | None


def _copy(x: ArrayT) -> ArrayT:
    return x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)


def _float_copy(x: ArrayT) -> ArrayT:
    """A copy with a floating dtype (integer inputs become float32), so in-place divisions do not truncate."""
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x.copy() if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def _empty_like(x: ArrayT) -> ArrayT:
    return torch.empty_like(x) if isinstance(x, torch.Tensor) else np.empty_like(x)


def xywh2xyxy(x: ArrayT) -> ArrayT:
    """Centre-x, centre-y, width, height (..., 4) -> x1, y1, x2, y2 (..., 4)."""
    y = _empty_like(x)
    half_w, half_h = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def xyxy2xywh(x: ArrayT) -> ArrayT:
    """x1, y1, x2, y2 (..., 4) -> centre-x, centre-y, width, height (..., 4)."""
    y = _empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywhn2xyxy(x: ArrayT, w: float = 640, h: float = 640, padw: float = 0, padh: float = 0) -> ArrayT:
    """Normalised xywh (..., 4) -> xyxy pixels (..., 4) of a w x h image placed at offset (padw, padh)."""
    y = _empty_like(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy2xywhn(x: ArrayT, w: float = 640, h: float = 640, clip: bool = False) -> ArrayT:
    """xyxy pixels (..., 4) -> xywh normalised by (w, h); `clip` first clips the boxes to the image."""
    if clip:
        x = clip_boxes(x, (h, w))
    y = _empty_like(x)
    y[..., 0] = ((x[..., 0] + x[..., 2]) / 2) / w
    y[..., 1] = ((x[..., 1] + x[..., 3]) / 2) / h
    y[..., 2] = (x[..., 2] - x[..., 0]) / w
    y[..., 3] = (x[..., 3] - x[..., 1]) / h
    return y


def box_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes (N, 4) and (M, 4) -> (N, M), float32: inter / (area1 + area2 - inter + eps)."""
    a = box1.float()
    b = box2.float()
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_(min=0).prod(2)
    area1 = (a[:, 2:] - a[:, :2]).prod(1)
    area2 = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def bbox_iou(
    box1: torch.Tensor, box2: torch.Tensor, xywh: bool = True, CIoU: bool = False, eps: float = 1e-7
) -> torch.Tensor:
    """Element-wise IoU (or Complete IoU) of broadcastable boxes (..., 4) -> (..., 1).

    Args:
        box1, box2: (..., 4) boxes, xywh when `xywh` else xyxy; shapes broadcast against each other.
        CIoU: return IoU - (centre distance^2 / enclosing diagonal^2 + v * alpha) (Zheng et al. 2020).
    """
    if xywh:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * (
        b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)
    ).clamp(0)
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    if not CIoU:
        return iou
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)  # enclosing box
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = (4 / math.pi**2) * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def clip_boxes(boxes: ArrayT, shape: Sequence[float]) -> ArrayT:
    """Clip xyxy boxes (..., 4) to an image of `shape` (h, w): x to [0, w], y to [0, h]."""
    h, w = shape[0], shape[1]
    y = _copy(boxes)
    if isinstance(y, torch.Tensor):
        y[..., 0::2] = y[..., 0::2].clamp(0, w)
        y[..., 1::2] = y[..., 1::2].clamp(0, h)
    else:
        y[..., 0::2] = y[..., 0::2].clip(0, w)
        y[..., 1::2] = y[..., 1::2].clip(0, h)
    return y


def letterbox_geometry(
    shape: tuple[int, int],
    new_shape: int | tuple[int, int],
    auto: bool = False,
    scaleup: bool = True,
    center: bool = True,
    stride: int = 32,
) -> tuple[float, tuple[int, int], tuple[int, int, int, int]]:
    """Letterbox arithmetic for an image of (h, w): (r, (new_w, new_h) content size, (top, bottom, left, right))."""
    h, w = shape
    big_h, big_w = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(big_h / h, big_w / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = big_w - new_w, big_h - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    if center:  # floor(d / 2) before, the odd pixel after
        top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
        left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    else:
        top, bottom, left, right = 0, dh, 0, dw
    return r, (new_w, new_h), (top, bottom, left, right)


def letterbox_params(
    img1_shape: Sequence[int], img0_shape: Sequence[int], ratio_pad: RatioPad = None
) -> tuple[float, float, float, float]:
    """Per-axis gains and paddings (gain_x, gain_y, pad_x, pad_y) mapping original pixels into the letterbox.

    Without `ratio_pad` (predict, §5.6): g = min(H/h0, W/w0); the content size is rounded (at least 1 pixel), the
    gains are taken per axis from it, and the left/top padding is round(d/2 - 0.1). With `ratio_pad` =
    ((gain_h, gain_w) or gain, (pad_left, pad_top)) those values are used as given.
    """
    if ratio_pad is not None:
        gain = np.asarray(ratio_pad[0], dtype=np.float64).reshape(-1)
        gain_y, gain_x = (gain[0], gain[1]) if gain.size > 1 else (gain[0], gain[0])
        pad = ratio_pad[1]
        return float(gain_x), float(gain_y), float(pad[0]), float(pad[1])
    (h1, w1), (h0, w0) = img1_shape[:2], img0_shape[:2]
    _, (new_w, new_h), (pad_y, _, pad_x, _) = letterbox_geometry((h0, w0), (h1, w1))
    return new_w / w0, new_h / h0, float(pad_x), float(pad_y)


def scale_boxes(
    img1_shape: Sequence[int],
    boxes: ArrayT,
    img0_shape: Sequence[int],
    ratio_pad: RatioPad = None,
    padding: bool = True,
) -> ArrayT:
    """Map xyxy boxes (N, 4) from the letterboxed image (H, W) back to the original (h0, w0), clipped (§5.6).

    Args:
        img1_shape: (H, W) letterboxed network input.
        boxes: (N, 4) xyxy pixels in the letterboxed image.
        img0_shape: (h0, w0) original image.
        ratio_pad: ((gain_h, gain_w), (pad_left, pad_top)) from the dataset; computed from the shapes when None.
        padding: subtract the padding (False for images padded only bottom/right).
    """
    gain_x, gain_y, pad_x, pad_y = letterbox_params(img1_shape, img0_shape, ratio_pad)
    y = _float_copy(boxes)
    if padding:
        y[..., 0] = y[..., 0] - pad_x
        y[..., 2] = y[..., 2] - pad_x
        y[..., 1] = y[..., 1] - pad_y
        y[..., 3] = y[..., 3] - pad_y
    y[..., 0] = y[..., 0] / gain_x
    y[..., 2] = y[..., 2] / gain_x
    y[..., 1] = y[..., 1] / gain_y
    y[..., 3] = y[..., 3] / gain_y
    return clip_boxes(y, img0_shape)


def scale_coords(
    img1_shape: Sequence[int],
    coords: ArrayT,
    img0_shape: Sequence[int],
    ratio_pad: RatioPad = None,
    normalize: bool = False,
    padding: bool = True,
) -> ArrayT:
    """Map xy points (N, 2) from the letterboxed image to the original image (§5.7), clamped to [0, w0] x [0, h0].

    Same gains and padding as `scale_boxes`; `normalize` then divides by (w0, h0).
    """
    gain_x, gain_y, pad_x, pad_y = letterbox_params(img1_shape, img0_shape, ratio_pad)
    h0, w0 = img0_shape[0], img0_shape[1]
    y = _float_copy(coords)
    if padding:
        y[..., 0] = y[..., 0] - pad_x
        y[..., 1] = y[..., 1] - pad_y
    y[..., 0] = y[..., 0] / gain_x
    y[..., 1] = y[..., 1] / gain_y
    if isinstance(y, torch.Tensor):
        y[..., 0] = y[..., 0].clamp(0, w0)
        y[..., 1] = y[..., 1].clamp(0, h0)
    else:
        y[..., 0] = y[..., 0].clip(0, w0)
        y[..., 1] = y[..., 1].clip(0, h0)
    if normalize:
        y[..., 0] = y[..., 0] / w0
        y[..., 1] = y[..., 1] / h0
    return y
