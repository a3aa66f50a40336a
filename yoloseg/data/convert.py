"""COCO instance JSON -> YOLO-seg layout (`images/<split>`, `labels/<split>/*.txt`, `data.yaml`).

Multi-part polygons become one instance (parts bridged at their closest points); crowd annotations are skipped by
default; RLE masks (crowd or not) are traced into polygons when `use_rle=True`. Category ids are remapped to
contiguous classes 0..n-1 in id order, keeping their names.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..metrics.rle import decode_mask
from ..utils.files import atomic_write_text
from ..utils.log import log
from .errors import DatasetError
from .polygons import join_parts


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One (K, 2) outline of a binary mask: its outer contours (largest first) joined into one polyline."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = sorted(
        (c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3), key=lambda c: -cv2.contourArea(c)
    )
    return join_parts(parts) if parts else None


def annotation_polygon(ann: dict, use_rle: bool) -> tuple[np.ndarray | None, str]:
    """(polygon (K, 2) in pixels or None, reason when None) for one COCO annotation."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        parts = [np.asarray(p, np.float32).reshape(-1, 2) for p in seg if isinstance(p, list) and len(p) >= 6]
        return (join_parts(parts), "") if parts else (None, "no polygon")
    if isinstance(seg, dict):
        if not use_rle:
            return None, "RLE (use_rle=True converts it)"
        poly = mask_polygon(decode_mask(seg))
        return (poly, "") if poly is not None else (None, "empty RLE")
    return None, "no segmentation"


def _link_images(images_dir: Path, dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(images_dir.resolve(), dest, target_is_directory=True)
    except OSError:  # no symlinks (e.g. Windows without privileges): copy instead
        shutil.copytree(images_dir, dest)


def _write_yaml(out_dir: Path, split: str, names: dict[int, str]) -> Path:
    f = out_dir / "data.yaml"
    cfg = yaml.safe_load(f.read_text()) if f.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    cfg["path"] = "."
    for key in ("train", "val"):
        if key in split or key not in cfg:
            cfg[key] = f"images/{split}"
    cfg["names"] = names
    atomic_write_text(f, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return f


def convert_coco(
    labels_json: str | Path, images_dir: str | Path, out_dir: str | Path, use_rle: bool = False, skip_crowd: bool = True
) -> Path:
    """Convert one COCO instances JSON and its image folder; returns the written data.yaml.

    Images are linked (or copied) into out_dir/images/<split>, where <split> is the image folder's name; labels go
    to out_dir/labels/<split>. Running it for train and val into one out_dir fills both splits of data.yaml.
    """
    labels_json, images_dir, out_dir = Path(labels_json), Path(images_dir), Path(out_dir)
    try:
        data = json.loads(labels_json.read_text(encoding="utf-8"))
        cats = sorted(data["categories"], key=lambda c: c["id"])
        images = {im["id"]: im for im in data["images"]}
        anns = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{labels_json}: not a COCO instances JSON ({type(e).__name__}: {e})") from None
    if not images_dir.is_dir():
        raise DatasetError(f"images={images_dir}: not a folder; pass the folder holding the JSON's images")
    cls_of = {c["id"]: i for i, c in enumerate(cats)}
    names = {i: str(c["name"]) for i, c in enumerate(cats)}
    rows, skipped = defaultdict(list), defaultdict(int)
    for ann in anns:
        im = images.get(ann.get("image_id"))
        if im is None or ann.get("category_id") not in cls_of:
            skipped["unknown image or category"] += 1
            continue
        if ann.get("iscrowd") and skip_crowd:
            skipped["crowd"] += 1
            continue
        poly, reason = annotation_polygon(ann, use_rle)
        if poly is None or len(poly) < 3:
            skipped[reason or "degenerate"] += 1
            continue
        xy = np.clip(poly / np.array([im["width"], im["height"]], np.float32), 0, 1).reshape(-1)
        rows[im["id"]].append(f"{cls_of[ann['category_id']]} " + " ".join(f"{v:.6g}" for v in xy))
    split = images_dir.name
    for im_id, lines in rows.items():
        rel = Path(images[im_id]["file_name"]).with_suffix(".txt")
        atomic_write_text(out_dir / "labels" / split / rel, "\n".join(lines) + "\n")
    _link_images(images_dir, out_dir / "images" / split)
    yaml_file = _write_yaml(out_dir, split, names)
    n = sum(len(v) for v in rows.values())
    log.info(
        f"Converted {labels_json.name}: {len(images)} images, {n} instances, {len(names)} classes into {out_dir}"
        + (f"; skipped {dict(skipped)}" if skipped else "")
    )
    return yaml_file
