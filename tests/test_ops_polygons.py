"""Polygons from masks (§5.7): holes, merged parts, empty masks, windowed contours, and the incumbent's fixture."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloseg.ops.boxes import scale_coords
from yoloseg.ops.polygons import mask_to_polygons, masks_to_polygons, merge_multi_segment

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "reference" / "golden"


def ring(size: int = 20) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[3:15, 4:16] = 1
    mask[7:11, 8:12] = 0
    return mask


def two_blobs() -> np.ndarray:
    mask = np.zeros((20, 30), np.uint8)
    mask[2:6, 2:6] = 1  # 4 x 4
    mask[10:18, 20:28] = 1  # 8 x 8
    return mask


def test_empty_mask_gives_empty_polygon() -> None:
    polygons = masks_to_polygons(np.zeros((2, 10, 10), np.uint8))
    assert [p.shape for p in polygons] == [(0, 2), (0, 2)]
    assert polygons[0].dtype == np.float32
    assert masks_to_polygons(np.zeros((0, 10, 10), np.uint8)) == []
    assert mask_to_polygons(np.zeros((10, 10), np.uint8)) == []


def test_single_square() -> None:
    mask = np.zeros((1, 10, 10), np.uint8)
    mask[0, 2:5, 3:7] = 1
    (polygon,) = masks_to_polygons(torch.from_numpy(mask))
    assert polygon.tolist() == [[3, 2], [3, 4], [6, 4], [6, 2]]  # boundary pixel indices, no half-pixel shift


def test_ring_drops_hole_but_mask_to_polygons_keeps_it() -> None:
    (outer,) = masks_to_polygons(ring()[None])
    assert outer.tolist() == [[4, 3], [4, 14], [15, 14], [15, 3]]
    (part,) = mask_to_polygons(ring())
    assert part["exterior"].tolist() == outer.tolist()
    (hole,) = part["holes"]
    assert hole.dtype == np.float32
    # the object pixels around the 4 x 4 hole (rows 7..10, columns 8..11), corners cut (8-connectivity)
    assert hole.tolist() == [[7, 7], [8, 6], [11, 6], [12, 7], [12, 10], [11, 11], [8, 11], [7, 10]]
    assert mask_to_polygons(ring(), holes=False)[0]["holes"] == []


def test_two_blobs_merge_into_one_polyline() -> None:
    (merged,) = masks_to_polygons(two_blobs()[None])
    contours, _ = cv2.findContours(two_blobs(), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    first, second = (c.reshape(-1, 2) for c in contours)  # OpenCV order: the lower blob first
    assert first.tolist() == [[20, 10], [20, 17], [27, 17], [27, 10]]
    # closest pair: first[0] (20, 10) and second[2] (5, 5); each outline is rolled to its link and closed
    assert merged.tolist() == [
        [20, 10], [20, 17], [27, 17], [27, 10], [20, 10],
        [5, 5], [5, 2], [2, 2], [2, 5], [5, 5],
    ]  # fmt: skip
    parts = mask_to_polygons(two_blobs())
    assert len(parts) == 2
    (largest,) = mask_to_polygons(two_blobs(), parts=False)
    assert largest["exterior"].tolist() == first.tolist()


def test_merge_middle_segment_walks_out_and_back() -> None:
    a = np.array([[0, 0], [0, 1]])
    b = np.array([[10, 0], [10, 5], [12, 5], [12, 0]])  # links: (10, 0) to a, (12, 5) to c
    c = np.array([[20, 5], [20, 6]])
    merged = np.concatenate(merge_multi_segment([a, b, c]))
    assert merged.tolist() == [
        [0, 0], [0, 1], [0, 0],  # a, closed
        [10, 0], [10, 5], [12, 5],  # b forward to its second link
        [20, 5], [20, 6], [20, 5],  # c, closed
        [12, 5], [12, 0], [10, 0],  # b's remainder on the way back
    ]  # fmt: skip
    descending = np.concatenate(merge_multi_segment([a, b[::-1], c]))  # links descend: b is walked backwards
    assert descending.tolist() == merged.tolist()


def test_windowed_contours_equal_full_image() -> None:
    rng = np.random.default_rng(0)
    masks = np.zeros((30, 64, 80), np.uint8)
    for mask in masks:
        for _ in range(rng.integers(1, 4)):
            centre = (int(rng.integers(0, 80)), int(rng.integers(0, 64)))
            cv2.circle(mask, centre, int(rng.integers(1, 15)), 1, -1)
        mask &= (rng.random(mask.shape) > 0.05).astype(np.uint8)
    for mask, polygon in zip(masks, masks_to_polygons(masks)):
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        want = contours[0].reshape(-1, 2) if len(contours) == 1 else np.concatenate(merge_multi_segment(contours))
        assert polygon.tolist() == want.tolist()


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="incumbent fixtures not available")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under NumPy 2
@pytest.mark.parametrize("checkpoint", ["yolo11n-seg-shapes", "yolo11n-seg-coco128"])
def test_polygons_match_incumbent_fixture(checkpoint: str) -> None:
    """Masks.xy of the incumbent (recorded to 2 decimals) from its masks: contours, merging, scale_coords."""
    from pycocotools import mask as mask_utils

    images = json.loads((GOLDEN / f"{checkpoint}.predictions.json").read_text())["images"]
    checked = 0
    for image in images:
        detections = image["detections"]
        if not detections:
            continue
        masks = np.stack([mask_utils.decode(d["mask_rle"]) for d in detections])
        for det, polygon in zip(detections, masks_to_polygons(masks)):
            xy = scale_coords(image["mask_shape"], polygon, image["orig_shape"])
            want = np.array(det["polygon_xy"], dtype=np.float32).reshape(-1, 2)
            np.testing.assert_array_equal(np.round(xy.astype(np.float64), 2).astype(np.float32), want)
            checked += 1
    assert checked > 100
