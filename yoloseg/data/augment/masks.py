"""Ground-truth masks for the loss and for validation (§5.8).

Each polygon is cast to int32 (truncation), filled with cv2.fillPoly on the full-resolution canvas and resized to
1/mask_ratio with INTER_LINEAR. With a downscale by an exact integer factor, every low-resolution pixel depends only
on its own ratio x ratio block, so each polygon is rasterised in a ratio-aligned window around it: identical
output, with cost and memory bounded by the instance's size instead of the image's.
"""

from __future__ import annotations

import cv2
import numpy as np


def polygon_window(poly: np.ndarray, shape: tuple[int, int], ratio: int) -> tuple[np.ndarray, int, int] | None:
    """Rasterise one polygon (K, 2) xy pixels at 1/ratio of a canvas `shape` (H, W).

    Returns (mask (h, w) uint8 0/1, y0, x0): the window's place in the low-resolution grid; None if the polygon
    misses the canvas.
    """
    big_h, big_w = shape
    pts = np.asarray(poly).astype(np.int32)  # truncation toward zero, as the reference rasterisation does
    if len(pts) == 0:
        return None
    small_h, small_w = big_h // ratio, big_w // ratio
    x0, y0 = max(int(pts[:, 0].min()) // ratio, 0), max(int(pts[:, 1].min()) // ratio, 0)
    x1, y1 = min(int(pts[:, 0].max()) // ratio + 1, small_w), min(int(pts[:, 1].max()) // ratio + 1, small_h)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = np.zeros(((y1 - y0) * ratio, (x1 - x0) * ratio), np.uint8)
    cv2.fillPoly(canvas, [pts - np.array([x0 * ratio, y0 * ratio], np.int32)], 1)
    if ratio > 1:
        canvas = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return canvas, y0, x0


def polygon_mask(poly: np.ndarray, shape: tuple[int, int], ratio: int = 1) -> np.ndarray:
    """(H/ratio, W/ratio) uint8 0/1 mask of one polygon, the full-canvas way (reference for the windowed path)."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [np.asarray(poly).astype(np.int32)], 1)
    if ratio == 1:
        return canvas
    return cv2.resize(canvas, (shape[1] // ratio, shape[0] // ratio), interpolation=cv2.INTER_LINEAR)


def _windows(polygons: list[np.ndarray], shape: tuple[int, int], ratio: int) -> list:
    if shape[0] % ratio or shape[1] % ratio:  # not an exact integer downscale: rasterise on the full canvas
        return [(polygon_mask(p, shape, ratio), 0, 0) for p in polygons]
    return [polygon_window(p, shape, ratio) for p in polygons]


def instance_masks(polygons: list[np.ndarray], shape: tuple[int, int], ratio: int = 4) -> np.ndarray:
    """(N, H/ratio, W/ratio) uint8 binary masks, one per polygon."""
    out = np.zeros((len(polygons), shape[0] // ratio, shape[1] // ratio), np.uint8)
    for i, win in enumerate(_windows(polygons, shape, ratio)):
        if win is not None:
            m, y0, x0 = win
            out[i, y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
    return out


def overlap_mask(polygons: list[np.ndarray], shape: tuple[int, int], ratio: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One (H/ratio, W/ratio) index map: 0 background, k+1 for the k-th instance of the returned order.

    Instances are painted largest first (order = argsort of -area, NumPy's default sort), so a pixel shared by
    several instances belongs to the smallest. Returns (map uint8, or int32 above 255 instances; order (N,)).
    """
    wins = _windows(polygons, shape, ratio)
    areas = np.array([int(w[0].sum()) if w is not None else 0 for w in wins], np.int64)
    order = np.argsort(-areas)
    dtype = np.uint8 if len(polygons) <= 255 else np.int32
    out = np.zeros((shape[0] // ratio, shape[1] // ratio), dtype)
    for k, i in enumerate(order):
        if wins[i] is not None:
            m, y0, x0 = wins[i]
            region = out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
            region[m > 0] = k + 1
    return out, order
