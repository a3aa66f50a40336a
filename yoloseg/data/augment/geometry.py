"""Geometric augmentations: random perspective and flips. Parameters are drawn from an injected generator, then a
deterministic kernel moves the image and the polygons together; boxes are re-derived from the moved polygons."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..polygons import clip_polygon, flat_points, polygon_boxes
from ..sample import Instances
from .letterbox import PAD_VALUE


def with_polygons(classes: np.ndarray, polygons: list[np.ndarray]) -> Instances:
    """Instances whose boxes are the extents of their polygons."""
    return Instances(np.asarray(classes, np.int64), polygons, polygon_boxes(polygons))


def clip_instances(inst: Instances, width: float, height: float) -> Instances:
    """Cut every polygon to the canvas [0, width] x [0, height]; instances left with < 3 points are dropped."""
    polys = [clip_polygon(p, width, height) for p in inst.polygons]
    keep = np.array([len(p) >= 3 for p in polys], bool)
    return with_polygons(inst.classes[keep], [p for p, k in zip(polys, keep) if k])


def draw_perspective(
    rng: np.random.Generator,
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Draw a random 3x3 warp taking an image of `in_shape` (h, w) to `out_shape`, and its scale factor.

    centre -> perspective -> rotation + scale -> shear -> translation to the output centre +- translate.
    """
    h, w = in_shape
    center = np.eye(3)
    center[0, 2], center[1, 2] = -w / 2, -h / 2
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    rot = np.eye(3)
    angle, s = rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    trans = np.eye(3)
    trans[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_shape[1]
    trans[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_shape[0]
    return trans @ sh @ rot @ persp @ center, s


def warp_points(pts: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 3x3 projective matrix to (K, 2) points."""
    xyz = np.concatenate([pts.astype(np.float64), np.ones((len(pts), 1))], 1) @ matrix.T
    return (xyz[:, :2] / xyz[:, 2:3]).astype(np.float32)


def box_candidates(
    before: np.ndarray, after: np.ndarray, min_wh: float = 2, area_thr: float = 0.1, max_ar: float = 100
) -> np.ndarray:
    """(N,) bool: boxes after a warp that stay wider/taller than min_wh px, keep > area_thr of their (scaled) area
    and an aspect ratio below max_ar. `before` must already be multiplied by the warp's scale."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > min_wh) & (h2 > min_wh) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < max_ar)


def warp(
    img: np.ndarray, inst: Instances, matrix: np.ndarray, scale: float, out_shape: tuple[int, int]
) -> tuple[np.ndarray, Instances]:
    """Warp image and polygons with `matrix` into `out_shape` (h, w); cut polygons to the output, drop degenerate
    instances (box_candidates against the pre-warp boxes times `scale`)."""
    size = (out_shape[1], out_shape[0])
    fill = (PAD_VALUE,) * 3
    if not np.allclose(matrix[2], [0, 0, 1]):
        img = cv2.warpPerspective(img, matrix, size, borderValue=fill)
    elif not (np.allclose(matrix, np.eye(3)) and img.shape[:2] == tuple(out_shape)):
        img = cv2.warpAffine(img, matrix[:2], size, borderValue=fill)
    if not len(inst):
        return img, inst
    points, lengths = flat_points(inst.polygons)  # one warp for all (the same per-point arithmetic)
    moved = [
        clip_polygon(p, out_shape[1], out_shape[0])
        for p in np.split(warp_points(points, matrix), np.cumsum(lengths)[:-1])
    ]
    ok = np.array([len(p) >= 3 for p in moved], bool)
    after = polygon_boxes(moved)
    ok &= box_candidates(inst.boxes_xyxy * scale, after)
    return img, Instances(inst.classes[ok], [p for p, k in zip(moved, ok) if k], after[ok])


def random_perspective(
    img: np.ndarray, inst: Instances, rng: np.random.Generator, out_shape: tuple[int, int], **hyp: float
) -> tuple[np.ndarray, Instances]:
    """Draw a warp (hyp: degrees, translate, scale, shear, perspective) and apply it."""
    matrix, s = draw_perspective(rng, img.shape[:2], out_shape, **hyp)
    return warp(img, inst, matrix, s, out_shape)


def flip(img: np.ndarray, inst: Instances, horizontal: bool) -> tuple[np.ndarray, Instances]:
    """Mirror image and polygons left-right (horizontal) or top-bottom."""
    h, w = img.shape[:2]
    axis = 0 if horizontal else 1
    size = w if horizontal else h
    img = cv2.flip(img, 1 if horizontal else 0)
    polys = []
    for p in inst.polygons:
        q = p.copy()
        q[:, axis] = size - q[:, axis]
        polys.append(q)
    return img, with_polygons(inst.classes, polys)
