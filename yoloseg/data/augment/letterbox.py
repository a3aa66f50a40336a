"""Resizing kernels shared by the dataset and the predictor: long-side resize (§5.1) and letterbox (§5.2, §5.3)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ...ops.boxes import letterbox_geometry as letterbox_params

PAD_VALUE = 114


def long_side_shape(h0: int, w0: int, imgsz: int) -> tuple[int, int]:
    """(h, w) of an (h0, w0) image whose long side is resized to `imgsz`: min(ceil(side * r), imgsz) (§5.1)."""
    r = imgsz / max(h0, w0)
    if r == 1:
        return h0, w0
    return min(math.ceil(h0 * r), imgsz), min(math.ceil(w0 * r), imgsz)


def resize_long_side(img: np.ndarray, imgsz: int) -> np.ndarray:
    """Resize (h0, w0, C) so its long side is `imgsz` (`long_side_shape`), INTER_LINEAR (§5.1).

    Images are scaled up as well as down; an image whose long side already is `imgsz` is returned as is.
    """
    h, w = long_side_shape(*img.shape[:2], imgsz)
    if (h, w) == img.shape[:2]:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int],
    auto: bool = False,
    scaleup: bool = True,
    center: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize (h, w, C) to fit `new_shape` (h, w) keeping its aspect, then pad with 114.

    r = min(H / h, W / w) (at most 1 without scaleup); content max(round(w r), 1) x max(round(h r), 1),
    INTER_LINEAR; with `auto` the padding only reaches the next multiple of `stride`. Returns
    (image, (r, r) the scale applied to coordinates, (pad_left, pad_top)).
    """
    r, (new_w, new_h), (top, bottom, left, right) = letterbox_params(
        img.shape[:2], new_shape, auto, scaleup, center, stride
    )
    if (img.shape[1], img.shape[0]) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        value = (PAD_VALUE,) * (img.shape[2] if img.ndim == 3 else 1)
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)
    return img, (r, r), (left, top)
