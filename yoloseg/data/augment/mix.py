"""Augmentations that combine images or instances: mosaic, copy-paste (flip / mixup modes), mixup, and HSV jitter."""

from __future__ import annotations

import cv2
import numpy as np

from ..sample import Instances
from .geometry import clip_instances, with_polygons
from .letterbox import PAD_VALUE


def concat_instances(parts: list[Instances]) -> Instances:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Instances.empty()
    return Instances(
        np.concatenate([p.classes for p in parts]),
        [q for p in parts for q in p.polygons],
        np.concatenate([p.boxes_xyxy for p in parts]),
    )


def shift_instances(inst: Instances, dx: float, dy: float) -> Instances:
    d = np.array([dx, dy], np.float32)
    return Instances(inst.classes, [p + d for p in inst.polygons], inst.boxes_xyxy + np.tile(d, 2))


def mosaic4(
    images: list[np.ndarray], instances: list[Instances], size: int, center: tuple[int, int]
) -> tuple[np.ndarray, Instances]:
    """Tile 4 images (each with long side <= size) around `center` (xc, yc) of a (2 size, 2 size) canvas:
    top-left, top-right, bottom-left, bottom-right, each touching the centre and cut at the canvas border."""
    xc, yc = center
    big = 2 * size
    canvas = np.full((big, big, 3), PAD_VALUE, np.uint8)
    placed = []
    for k, (img, inst) in enumerate(zip(images, instances)):
        h, w = img.shape[:2]
        x1 = max(xc - w, 0) if k in (0, 2) else xc  # canvas region
        x2 = xc if k in (0, 2) else min(xc + w, big)
        y1 = max(yc - h, 0) if k in (0, 1) else yc
        y2 = yc if k in (0, 1) else min(yc + h, big)
        sx = w - (x2 - x1) if k in (0, 2) else 0  # where the region starts in the image
        sy = h - (y2 - y1) if k in (0, 1) else 0
        canvas[y1:y2, x1:x2] = img[sy : sy + (y2 - y1), sx : sx + (x2 - x1)]
        placed.append(shift_instances(inst, x1 - sx, y1 - sy))
    return canvas, clip_instances(concat_instances(placed), big, big)


def fill_polygons(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """(H, W) bool union of polygons (int-truncated vertices, as the GT masks are)."""
    canvas = np.zeros(shape, np.uint8)
    if polygons:
        cv2.fillPoly(canvas, [p.astype(np.int32) for p in polygons], 1)
    return canvas.astype(bool)


def box_ioa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over the area of each `a` box; xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    return inter / (area[:, None] + 1e-7)


def paste(
    img: np.ndarray, inst: Instances, src_img: np.ndarray, src: Instances, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, Instances]:
    """Copy-paste: paste `fraction` of the `src` instances that overlap none of `inst` by IoA >= 0.3 (chosen at
    random) from `src_img` onto `img` (same size). Instances they cover stay labelled as they were."""
    if not len(src) or fraction <= 0:
        return img, inst
    ioa = box_ioa(src.boxes_xyxy, inst.boxes_xyxy).max(1) if len(inst) else np.zeros(len(src))
    eligible = np.flatnonzero(ioa < 0.30)
    k = round(fraction * len(eligible))
    if k == 0:
        return img, inst
    chosen = np.sort(rng.choice(eligible, size=k, replace=False))
    picked = src.select(chosen)
    region = fill_polygons(img.shape[:2], picked.polygons)
    img = img.copy()
    img[region] = src_img[region]
    return img, concat_instances([inst, picked])


def copy_paste_flip(
    img: np.ndarray, inst: Instances, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, Instances]:
    """Copy-paste, flip mode: the image's own instances mirrored left-right."""
    w = img.shape[1]
    mirrored = []
    for p in inst.polygons:
        q = p.copy()
        q[:, 0] = w - q[:, 0]
        mirrored.append(q)
    return paste(img, inst, np.ascontiguousarray(img[:, ::-1]), with_polygons(inst.classes, mirrored), fraction, rng)


def mixup(
    img: np.ndarray, inst: Instances, img2: np.ndarray, inst2: Instances, rng: np.random.Generator
) -> tuple[np.ndarray, Instances]:
    """Blend two same-size images with a Beta(32, 32) weight and keep the instances of both."""
    r = rng.beta(32.0, 32.0)
    out = (img.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)).astype(np.uint8)
    return out, concat_instances([inst, inst2])


def hsv_jitter(
    img: np.ndarray, rng: np.random.Generator, hgain: float = 0.015, sgain: float = 0.7, vgain: float = 0.4
) -> np.ndarray:
    """Random hue / saturation / value gains (1 +- gain) applied through lookup tables to a BGR uint8 image."""
    gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1
    if not (hgain or sgain or vgain):
        return img
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
