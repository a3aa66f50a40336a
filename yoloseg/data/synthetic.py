"""The built-in synthetic dataset: shapes over textured backgrounds, with occlusion and exact polygon labels.

Every image is drawn from its own generator seeded by (seed, split, index), so the dataset is the same on every
machine and for every generation order. Generated into a temporary folder and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

from ..utils.files import atomic_write_bytes, atomic_write_text
from ..utils.log import log
from .polygons import clip_polygon

SHAPE_NAMES = ("circle", "ellipse", "rectangle", "triangle", "star")
MIN_VISIBLE_PX = 24  # instances with less visible area are dropped
SUBPIXEL = 4  # fillPoly fractional bits: shapes are drawn from their float polygons


def shape_polygon(kind: int, center: np.ndarray, radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """(K, 2) float32 outline of shape class `kind` (index into SHAPE_NAMES)."""
    if kind in (0, 1):  # circle / ellipse
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        minor = 1.0 if kind == 0 else rng.uniform(0.35, 0.65)
        pts = np.stack([np.cos(t), minor * np.sin(t)], 1) * radius
    elif kind == 2:  # rectangle
        w, h = rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.9)
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) * radius
    elif kind == 3:  # triangle
        t = np.deg2rad(np.array([90, 210, 330]) + rng.uniform(-25, 25, 3))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius
    else:  # star with 5 or 6 spikes
        n = int(rng.integers(5, 7))
        t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], 1) * radius
    c, s = np.cos(angle), np.sin(angle)
    return (pts @ np.array([[c, s], [-s, c]]) + center).astype(np.float32)


def _fill(canvas: np.ndarray, poly: np.ndarray, value) -> np.ndarray:
    pts = np.round(poly * (1 << SUBPIXEL)).astype(np.int32)
    return cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_8, shift=SUBPIXEL)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8 BGR: a colour gradient, low-frequency blotches, a few distractor lines."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    direction = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = (np.cos(direction) * xx + np.sin(direction) * yy)[..., None]
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 * (1 - t) + c1 * t
    blotches = cv2.resize(rng.normal(0, 35, (6, 6, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + blotches, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), color, int(rng.integers(1, 4)))
    return img


def _placement_ok(new: np.ndarray, visible: list[np.ndarray], full_areas: list[int]) -> bool:
    """A new shape may hide at most half of an earlier one and must not cut it in two."""
    for vis, area in zip(visible, full_areas):
        left = vis & ~new
        if left.sum() < 0.5 * area or cv2.connectedComponents(left.astype(np.uint8))[0] > 2:
            return False
    return True


def render_scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """One image: (size, size, 3) uint8 BGR, class ids, and pixel polygons of the visible part of each shape."""
    img = background(size, rng)
    kinds, polys, visible, full_areas = [], [], [], []
    for _ in range(int(rng.integers(1, 8))):
        kind = int(rng.integers(len(SHAPE_NAMES)))
        for _try in range(10):
            radius = size * rng.uniform(0.05, 0.22)
            poly = shape_polygon(kind, rng.uniform(0.05, 0.95, 2) * size, radius, rng.uniform(0, 2 * np.pi), rng)
            mask = _fill(np.zeros((size, size), np.uint8), poly, 1).astype(bool)
            if mask.sum() >= MIN_VISIBLE_PX and _placement_ok(mask, visible, full_areas):
                break
        else:
            continue
        mean = img[mask].mean(0)
        color = rng.uniform(0, 255, 3)
        while np.abs(color - mean).sum() < 120:  # keep the shape visible against what it covers
            color = rng.uniform(0, 255, 3)
        _fill(img, poly, tuple(float(v) for v in color))
        visible = [v & ~mask for v in visible]
        kinds.append(kind)
        polys.append(poly)
        visible.append(mask)
        full_areas.append(int(mask.sum()))
    classes, outlines = [], []
    for kind, poly, vis, area in zip(kinds, polys, visible, full_areas):
        if vis.sum() < MIN_VISIBLE_PX:
            continue
        if vis.sum() == area:  # not occluded: the exact outline, cut at the image border
            outline = clip_polygon(poly, size, size)
        else:  # occluded: the outline of the visible pixels
            contours, _ = cv2.findContours(vis.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outline = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)
        if len(outline) >= 3:
            classes.append(kind)
            outlines.append(outline)
    img = img.astype(np.float32) + rng.normal(0, rng.uniform(2, 10), img.shape)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    return np.clip(img, 0, 255).astype(np.uint8), classes, outlines


def label_text(classes: list[int], polygons: list[np.ndarray], size: int) -> str:
    rows = [
        " ".join([str(c)] + [f"{v:.6f}" for v in np.clip(p / size, 0, 1).reshape(-1)])
        for c, p in zip(classes, polygons)
    ]
    return "\n".join(rows) + ("\n" if rows else "")


def _yaml_text(n_train: int, n_val: int, imgsz: int, seed: int) -> str:
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(SHAPE_NAMES))
    return (
        f"# yoloseg synthetic shapes: {n_train} train / {n_val} val images, {imgsz} px, seed {seed}\n"
        f"path: .\ntrain: images/train\nval: images/val\n\nnames:\n{names}\n"
    )


def generate_shapes(root: str | Path, n_train: int = 300, n_val: int = 60, imgsz: int = 256, seed: int = 0) -> Path:
    """Generate the shapes dataset into `root` (kept as is when it already holds a data.yaml); returns data.yaml."""
    root = Path(root)
    if (root / "data.yaml").is_file():
        return root / "data.yaml"
    if root.exists() and any(root.iterdir()):
        from .errors import DatasetError

        raise DatasetError(f"{root} exists but holds no data.yaml; delete the folder to generate the dataset again")
    log.info(f"Generating the synthetic shapes dataset ({n_train} train, {n_val} val, {imgsz} px) into {root} ...")
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for split_id, (split, n) in enumerate((("train", n_train), ("val", n_val))):
            for i in range(n):
                img, classes, polys = render_scene(imgsz, np.random.default_rng([seed, split_id, i]))
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
                atomic_write_bytes(tmp / "images" / split / f"{split}_{i:05d}.jpg", buf.tobytes())
                atomic_write_text(tmp / "labels" / split / f"{split}_{i:05d}.txt", label_text(classes, polys, imgsz))
        atomic_write_text(tmp / "data.yaml", _yaml_text(n_train, n_val, imgsz, seed))
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "data.yaml").is_file():  # not a concurrent generator that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "data.yaml"
