"""Augmentation kernels: letterbox arithmetic, mask rasterisation, polygons, and image/label agreement per transform."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from yoloseg.data.augment.geometry import flip, random_perspective, with_polygons
from yoloseg.data.augment.letterbox import letterbox, resize_long_side
from yoloseg.data.augment.masks import instance_masks, overlap_mask, polygon_mask
from yoloseg.data.augment.mix import copy_paste_flip, mixup, mosaic4
from yoloseg.data.augment.pipeline import AugmentHyp, TrainAugment, letterbox_instances
from yoloseg.data.polygons import (
    clip_polygon,
    join_parts,
    polygon_area,
    polygon_boxes,
    resample_count,
    resample_polygon,
)

COLORS = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0]], np.uint8)  # BGR per class


@pytest.mark.parametrize(
    "hw, new, auto, scaleup, content, pads",
    [
        ((1080, 1920), (640, 640), True, True, (640, 360), (0, 12)),  # §5.3 probed
        ((333, 500), (640, 640), True, True, (640, 426), (0, 11)),
        ((427, 640), (640, 640), True, True, (640, 427), (0, 10)),  # 10 top / 11 bottom
        ((480, 640), (512, 672), False, False, (640, 480), (16, 16)),  # §5.2 rect val
        ((480, 640), (320, 320), False, True, (320, 240), (0, 40)),
        ((100, 50), (320, 320), False, False, (50, 100), (135, 110)),
    ],
)
def test_letterbox_arithmetic(hw, new, auto, scaleup, content, pads):
    img = np.zeros((*hw, 3), np.uint8)
    out, (r, r2), (left, top) = letterbox(img, new, auto=auto, scaleup=scaleup)
    assert r == r2 and (left, top) == pads
    dh, dw = out.shape[0] - content[1], out.shape[1] - content[0]
    assert not auto or (dh < 32 and dw < 32 and out.shape[0] % 32 == 0)
    assert auto or out.shape[:2] == new
    assert (out[top, left] == 0).all() and (out[top + content[1] - 1, left + content[0] - 1] == 0).all()


def test_resize_long_side_ceil():
    assert resize_long_side(np.zeros((333, 500, 3), np.uint8), 640).shape[:2] == (427, 640)  # ceil, not round
    assert resize_long_side(np.zeros((480, 640, 3), np.uint8), 320).shape[:2] == (240, 320)
    img = np.zeros((10, 640, 3), np.uint8)
    assert resize_long_side(img, 640) is img


def test_windowed_masks_equal_full_canvas():
    rng = np.random.default_rng(0)
    for t in range(300):
        shape, ratio = [((64, 96), 4), ((96, 64), 2), ((64, 64), 1), ((128, 96), 8)][t % 4]
        poly = (rng.uniform(-10, 140, 2) + rng.normal(0, rng.uniform(1, 40), (int(rng.integers(3, 20)), 2))).astype(
            np.float32
        )
        np.testing.assert_array_equal(instance_masks([poly], shape, ratio)[0], polygon_mask(poly, shape, ratio))


def test_overlap_map_smaller_on_top():
    big = np.array([[0, 0], [60, 0], [60, 60], [0, 60]], np.float32)
    small = np.array([[20, 20], [40, 20], [40, 40], [20, 40]], np.float32)
    index_map, order = overlap_mask([small, big], (64, 64), 4)
    assert order.tolist() == [1, 0]  # largest first
    assert index_map[7, 7] == 2 and index_map[1, 1] == 1  # the small one (k=1) wins where they overlap
    assert index_map.dtype == np.uint8
    many = [np.array([[i % 30, 0], [i % 30 + 1, 0], [i % 30 + 1, 1]], np.float32) for i in range(300)]
    assert overlap_mask(many, (32, 32), 4)[0].dtype == np.int32
    empty, order = overlap_mask([], (32, 32), 4)
    assert empty.shape == (8, 8) and not empty.any() and len(order) == 0


def test_resample_polygon():
    sq = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    r = resample_polygon(sq, 9)
    assert r.shape == (9, 2) and r.dtype == np.float32
    np.testing.assert_allclose(r[[0, -1]], [[0, 0], [0, 0]])  # closed
    assert {tuple(p) for p in sq.tolist()} <= {tuple(p) for p in r.tolist()}  # vertices kept
    assert resample_polygon(sq, 4) is not None and resample_polygon(sq, 4).shape == (4, 2)
    assert resample_count([np.zeros((1200, 2))]) == 1201 and resample_count([sq]) == 1000


def test_polygon_boxes_equal_each_polygons_extent():
    rng = np.random.default_rng(0)
    polygons = [rng.uniform(-50, 700, (n, 2)).astype(np.float32) for n in (1000, 3, 0, 1, 17, 0)]
    polygons.append(rng.uniform(0, 1, (5, 2)))  # float64 points, as a caller may pass
    boxes = polygon_boxes(polygons)
    assert boxes.dtype == np.float32 and boxes.shape == (7, 4)
    for p, box in zip(polygons, boxes):
        want = np.r_[p.min(0), p.max(0)] if len(p) else np.zeros(4)
        assert np.array_equal(box, want.astype(np.float32))
    assert polygon_boxes([]).shape == (0, 4)
    assert not polygon_boxes([np.zeros((0, 2), np.float32)]).any()


def test_clip_polygon_and_join():
    tri = np.array([[-10, 5], [20, 5], [5, 30]], np.float32)
    c = clip_polygon(tri, 16, 16)
    assert c[:, 0].min() >= 0 and c[:, 0].max() <= 16 and c[:, 1].max() <= 16
    assert polygon_area(c) < polygon_area(tri)
    assert len(clip_polygon(tri + 100, 16, 16)) == 0
    a = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    joined = join_parts([a, a + [20, 0]])
    m = polygon_mask(joined, (16, 40))
    assert m[5, 5] and m[5, 25] and not m[5, 15]


def scene(seed: int = 0, size: int = 96, n: int = 4):
    """An image with non-overlapping solid squares/triangles, one colour per class, and their polygons."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size + 16, 3), 60, np.uint8)
    classes, polys = [], []
    for k in range(n):
        cx, cy = 16 + (k % 2) * 44 + rng.uniform(0, 8), 16 + (k // 2) * 44 + rng.uniform(0, 8)
        s = rng.uniform(10, 16)
        poly = np.array([[cx - s, cy - s], [cx + s, cy - s], [cx + s * rng.uniform(0, 1), cy + s]], np.float32)
        c = k % 3
        img[polygon_mask(poly, img.shape[:2]) > 0] = COLORS[c]
        classes.append(c)
        polys.append(poly)
    return img, with_polygons(np.array(classes), polys)


def assert_coincide(img, inst, min_inside=0.95, check_color=True):
    """Mask pixels of each instance show its class colour (edge pixels aside); boxes are tight around the masks."""
    assert len(inst.polygons) == len(inst.classes) == len(inst.boxes_xyxy)
    for c, poly, box in zip(inst.classes, inst.polygons, inst.boxes_xyxy):
        m = polygon_mask(poly, img.shape[:2])
        if m.sum() < 30:
            continue
        ys, xs = np.nonzero(m)
        assert abs(xs.min() - box[0]) <= 1.5 and abs(ys.min() - box[1]) <= 1.5
        assert abs(xs.max() + 1 - box[2]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
        core = cv2.erode(m, np.ones((3, 3), np.uint8)) > 0  # interpolation blends the outermost pixels
        if check_color and core.sum() >= 12:
            close = np.abs(img[core].astype(int) - COLORS[c]).sum(1) < 60
            assert close.mean() >= min_inside, (c, close.mean())


def test_transforms_keep_image_and_labels_together():
    img, inst = scene()
    assert_coincide(img, inst)
    assert_coincide(*letterbox_instances(img, inst, (128, 160)))
    assert_coincide(*flip(img, inst, horizontal=True))
    assert_coincide(*flip(img, inst, horizontal=False))
    scenes = [scene(s) for s in range(4)]
    mimg, minst = mosaic4([a for a, _ in scenes], [b for _, b in scenes], 112, (100, 130))
    assert mimg.shape == (224, 224, 3) and len(minst) > 4
    assert_coincide(mimg, minst)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        hyp = dict(degrees=30, translate=0.1, scale=0.5, shear=10, perspective=0.001 * (seed % 2))
        wimg, winst = random_perspective(mimg, minst, rng, (112, 112), **hyp)
        assert wimg.shape == (112, 112, 3)
        assert_coincide(wimg, winst)
        assert all((p >= 0).all() and (p[:, 0] <= 112).all() and (p[:, 1] <= 112).all() for p in winst.polygons)
    cimg, cinst = copy_paste_flip(img, inst, 1.0, np.random.default_rng(0))
    assert len(cinst) > len(inst)
    assert_coincide(cimg, cinst.select(np.arange(len(inst), len(cinst))))  # pasted ones
    ximg, xinst = mixup(img, inst, *scene(1), np.random.default_rng(0))
    assert len(xinst) == 2 * len(inst)
    assert_coincide(ximg, xinst, check_color=False)


def test_pipeline_deterministic_and_consistent():
    scenes = [scene(s) for s in range(5)]

    def load(i):
        return scenes[i]

    hyp = AugmentHyp.from_dict(
        {"degrees": 10, "copy_paste": 0.5, "mixup": 0.5, "hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "unknown": 1}
    )
    aug = TrainAugment(hyp, 96)
    a = aug(2, 5, load, np.random.default_rng([0, 1, 2]))
    b = aug(2, 5, load, np.random.default_rng([0, 1, 2]))
    c = aug(2, 5, load, np.random.default_rng([0, 2, 2]))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (96, 96, 3)
    assert_coincide(a[0], a[1], check_color=False)
    off = hyp.without_mosaic()
    assert off.mosaic == off.mixup == off.copy_paste == 0 and off.degrees == 10
    with pytest.raises(ValueError, match="copy_paste_mode"):
        AugmentHyp.from_dict({"copy_paste_mode": "paste"})


def test_dense_image_is_bounded():
    """Hundreds of instances: masks are rasterised per instance window, polygons are not resampled in training."""
    import time

    rng = np.random.default_rng(0)
    polys = [(rng.uniform(0, 600, 2) + rng.normal(0, 6, (12, 2))).astype(np.float32) for _ in range(600)]
    t = time.perf_counter()
    index_map, order = overlap_mask(polys, (640, 640), 4)
    per_instance = instance_masks(polys, (640, 640), 4)
    assert time.perf_counter() - t < 10
    assert index_map.dtype == np.int32 and index_map.max() <= 600 and per_instance.shape == (600, 160, 160)
    inst = with_polygons(np.zeros(600, np.int64), polys)
    img = np.zeros((640, 640, 3), np.uint8)
    _, out = TrainAugment(AugmentHyp(mosaic=0.0), 640).rect(img, inst, (640, 640), np.random.default_rng(0))
    assert max(len(p) for p in out.polygons) <= 12 + 8  # clipping adds at most a few points, no resampling
