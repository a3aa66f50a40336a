"""Results / Boxes / Masks: slicing, conversions, polygons, text outputs, drawing and saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from yoloseg.plotting import content_region, draw_masks, mask_index_map, palette
from yoloseg.results import Boxes, Masks, Results

NAMES = {0: "person", 1: "bus", 2: "dog"}
ORIG = (100, 200)  # h0, w0
FRAME = (128, 128)  # letterboxed input: gain 0.64, content 64 x 128, 32 px padding top and bottom


def _masks() -> torch.Tensor:
    """Three masks in the (128, 128) input frame: two rectangles and an empty one."""
    m = torch.zeros(3, *FRAME, dtype=torch.uint8)
    m[0, 42:53, 10:31] = 1  # rows 42..52, cols 10..30
    m[1, 60:80, 64:100] = 1
    return m


def _results() -> Results:
    img = np.full((*ORIG, 3), 90, np.uint8)
    boxes = torch.tensor(
        [[15.0, 15.0, 50.0, 35.0, 0.9, 0.0], [100.0, 44.0, 156.0, 75.0, 0.8, 1.0], [1.0, 2.0, 3.0, 4.0, 0.3, 0.0]]
    )
    return Results(img, "/data/pic.jpg", NAMES, boxes=boxes, masks=_masks(), speed={"inference": 1.0})


def test_boxes_views():
    r = _results()
    b = r.boxes
    assert b.shape == (3, 6) and len(b) == 3 and b.orig_shape == ORIG and not b.is_track and b.id is None
    torch.testing.assert_close(b.xywh[0], torch.tensor([32.5, 25.0, 35.0, 20.0]))
    torch.testing.assert_close(b.xyxyn[0], torch.tensor([15 / 200, 15 / 100, 50 / 200, 35 / 100]))
    torch.testing.assert_close(b.xywhn[0], torch.tensor([32.5 / 200, 25 / 100, 35 / 200, 20 / 100]))
    torch.testing.assert_close(b.conf, torch.tensor([0.9, 0.8, 0.3]))
    assert b.cls.tolist() == [0.0, 1.0, 0.0]
    n = b.numpy()
    assert isinstance(n.data, np.ndarray) and isinstance(n.xywhn, np.ndarray)
    np.testing.assert_allclose(n.xywhn, b.xywhn.numpy())
    tracked = Boxes(torch.tensor([[1.0, 2, 3, 4, 7, 0.5, 2]]), ORIG)
    assert tracked.is_track and tracked.id.tolist() == [7.0] and tracked.cls.tolist() == [2.0]
    with pytest.raises(ValueError):
        Boxes(torch.zeros(2, 5), ORIG)


def test_masks_xy_in_original_pixels():
    r = _results()
    xy = r.masks.xy
    assert len(xy) == 3 and all(p.dtype == np.float32 and p.shape[1] == 2 for p in xy)
    # mask pixels rows 42..52, cols 10..30 -> original y = (row - 32) / 0.64, x = col / 0.64
    np.testing.assert_allclose(xy[0].min(0), [10 / 0.64, 10 / 0.64], atol=1e-4)
    np.testing.assert_allclose(xy[0].max(0), [30 / 0.64, 20 / 0.64], atol=1e-4)
    assert xy[2].shape == (0, 2)  # empty mask
    np.testing.assert_allclose(r.masks.xyn[0], xy[0] / np.array([200, 100], np.float32))
    assert r.masks.xy is xy  # cached


def test_retina_masks_xy_is_identity():
    m = torch.zeros(1, *ORIG, dtype=torch.uint8)
    m[0, 10:20, 30:60] = 1
    xy = Masks(m, ORIG).xy[0]
    np.testing.assert_array_equal(xy.min(0), [30, 10])
    np.testing.assert_array_equal(xy.max(0), [59, 19])


@pytest.mark.parametrize("index, expected", [(1, [1]), (-1, [2]), (slice(0, 2), [0, 1]), ([0, 2], [0, 2])])
def test_slicing_keeps_boxes_and_masks_together(index, expected):
    r = _results()
    _ = r.masks.xy  # fill the cache: slicing must slice it too
    s = r[index]
    assert isinstance(s, Results) and len(s) == len(expected)
    torch.testing.assert_close(s.boxes.data, r.boxes.data[expected])
    assert torch.equal(s.masks.data, r.masks.data[expected])
    for i, j in enumerate(expected):
        np.testing.assert_array_equal(s.masks.xy[i], r.masks.xy[j])
    assert s.orig_img is r.orig_img and s.path == r.path and s.names == r.names


def test_iteration_and_index_errors():
    r = _results()
    items = list(r)
    assert len(items) == 3 and all(len(x) == 1 for x in items)
    assert [float(x.boxes.conf[0]) for x in items] == pytest.approx([0.9, 0.8, 0.3])
    assert len(list(r.boxes)) == 3 and len(list(r.masks)) == 3
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(IndexError):
        r.boxes[-4]
    assert float(r[torch.tensor(1)].boxes.conf[0]) == pytest.approx(0.8)


def test_boolean_mask_slicing():
    r = _results()
    keep = r.boxes.conf > 0.5
    s = r[keep]
    assert len(s) == 2 and s.boxes.cls.tolist() == [0.0, 1.0] and s.masks.data.shape == (2, *FRAME)
    s2 = r[keep.numpy()]
    assert torch.equal(s2.boxes.data, s.boxes.data)
    s3 = r[[True, False, True]]
    assert s3.boxes.conf.tolist() == pytest.approx([0.9, 0.3])
    assert len(r[r.boxes.conf > 5]) == 0


def test_cpu_numpy_to():
    r = _results()
    n = r.numpy()
    assert isinstance(n.boxes.data, np.ndarray) and isinstance(n.masks.data, np.ndarray)
    np.testing.assert_allclose(n.masks.xy[0], r.masks.xy[0])
    t = n.to("cpu")
    assert isinstance(t.boxes.data, torch.Tensor)
    d = r.to(torch.float64)
    assert d.boxes.data.dtype == torch.float64
    assert r.cpu().boxes.data.device.type == "cpu"


def test_verbose_summary_and_json():
    r = _results()
    assert r.verbose() == "2 persons, 1 bus, "
    s = r.summary()
    assert [d["name"] for d in s] == ["person", "bus", "person"]
    assert s[0]["class"] == 0 and s[0]["confidence"] == pytest.approx(0.9)
    assert s[0]["box"] == {"x1": 15.0, "y1": 15.0, "x2": 50.0, "y2": 35.0}
    assert len(s[0]["segments"]["x"]) == len(r.masks.xy[0]) and s[2]["segments"] == {"x": [], "y": []}
    n = r.summary(normalize=True, decimals=3)
    assert n[0]["box"]["x2"] == 0.25 and max(n[0]["segments"]["x"]) <= 1.0
    assert json.loads(r.to_json()) == json.loads(json.dumps(s))
    csv_text = r.to_csv()
    lines = csv_text.strip().splitlines()
    assert lines[0] == "name,class,confidence,box,segments" and len(lines) == 4


def test_to_df_needs_pandas():
    r = _results()
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            r.to_df()
    else:
        assert len(r.to_df()) == 3


def test_save_txt_appends_and_skips_short_polygons(tmp_path):
    r = _results()
    f = tmp_path / "labels" / "pic.txt"
    r.save_txt(f, save_conf=True)
    lines = f.read_text().splitlines()
    assert len(lines) == 2  # the empty mask has no polygon
    first = lines[0].split()
    assert first[0] == "0" and float(first[-1]) == pytest.approx(0.9)
    coords = np.array(first[1:-1], float).reshape(-1, 2)
    np.testing.assert_allclose(coords, r.masks.xyn[0], atol=1e-5)
    r.save_txt(f)
    lines = f.read_text().splitlines()
    assert len(lines) == 4 and len(lines[2].split()) == len(first) - 1


def test_save_txt_without_masks(tmp_path):
    r = _results()
    r.masks = None
    f = tmp_path / "det.txt"
    r.save_txt(f)
    rows = [ln.split() for ln in f.read_text().splitlines()]
    assert len(rows) == 3 and len(rows[0]) == 5
    np.testing.assert_allclose(np.array(rows[0][1:], float), r.boxes.xywhn[0].numpy(), atol=1e-5)


def test_save_and_save_crop(tmp_path, monkeypatch):
    r = _results()
    monkeypatch.chdir(tmp_path)
    out = r.save()
    assert out == "results_pic.jpg" and (tmp_path / out).is_file()
    r.save_crop(tmp_path / "crops", "pic")
    assert (tmp_path / "crops" / "person" / "pic.jpg").is_file()
    assert (tmp_path / "crops" / "person" / "pic2.jpg").is_file()
    assert (tmp_path / "crops" / "bus" / "pic.jpg").is_file()


def test_plot_draws_masks_boxes_and_labels():
    r = _results()
    plain = r.plot(boxes=False, labels=False)
    assert plain.shape == (*ORIG, 3) and plain.dtype == np.uint8
    assert not np.shares_memory(plain, r.orig_img) and (r.orig_img == 90).all()
    # inside mask 0 (original rows ~16-31, cols ~16-46) the person colour is blended at alpha 0.5
    colour = palette()[0].astype(int)
    np.testing.assert_allclose(plain[25, 30].astype(int), (90 + colour) / 2, atol=1.5)
    assert (plain[90, 190] == 90).all()  # untouched background
    boxed = r.plot()
    assert (boxed != plain).any()
    no_masks = r.plot(masks=False, boxes=False, labels=False)
    assert (no_masks == 90).all()
    r.boxes.data[1, 5] = 2  # mask 1 is a dog: class colour 2, instance colour 1
    by_class = r.plot(boxes=False, labels=False)
    by_instance = r.plot(color_mode="instance", boxes=False, labels=False)
    np.testing.assert_allclose(by_class[60, 150].astype(int), (90 + palette()[2].astype(int)) / 2, atol=1.5)
    np.testing.assert_allclose(by_instance[60, 150].astype(int), (90 + palette()[1].astype(int)) / 2, atol=1.5)
    canvas = np.zeros((*ORIG, 3), np.uint8)
    assert r.plot(img=canvas).shape == canvas.shape


def test_empty_results():
    img = np.zeros((30, 40, 3), np.uint8)
    r = Results(img, "x.jpg", NAMES, boxes=torch.zeros(0, 6))
    assert len(r) == 0 and r.verbose() == "(no detections), " and r.summary() == []
    assert r.plot().shape == (30, 40, 3)
    assert r[r.boxes.conf > 0.5].boxes.shape == (0, 6)
    n = r.new()
    assert n.boxes is None and n.masks is None and len(n) == 0


def test_polygons_with_holes_and_parts():
    m = np.zeros((1, *ORIG), np.uint8)
    m[0, 10:50, 10:50] = 1
    m[0, 20:30, 20:30] = 0  # a hole
    m[0, 60:80, 100:150] = 1  # a second part
    polys = Masks(torch.from_numpy(m), ORIG).polygons()
    assert len(polys) == 1 and len(polys[0]) == 2
    ring = next(p for p in polys[0] if p["holes"])
    assert len(ring["holes"]) == 1 and ring["exterior"].dtype == np.float32
    hole = ring["holes"][0]
    assert 19 <= hole[:, 0].min() <= hole[:, 0].max() <= 31
    outer_only = Masks(torch.from_numpy(m), ORIG).polygons(holes=False, parts=False)
    assert len(outer_only[0]) == 1 and outer_only[0][0]["holes"] == []


def test_mask_index_map_and_draw_masks():
    m = np.zeros((2, 8, 8), np.uint8)
    m[0, :4] = 1
    m[1, 2:6] = 1
    idx = mask_index_map(m)
    assert idx[0, 0] == 1 and idx[3, 0] == 2 and idx[7, 0] == 0  # later masks on top
    # letterboxed frame -> original: content region of a (100, 200) image in (128, 128) is rows 32..95
    assert content_region(FRAME, ORIG) == (32, 0, 64, 128)
    big = np.zeros((1, *FRAME), np.uint8)
    big[0, 32:64] = 1  # upper half of the content
    idx = mask_index_map(big, ORIG)
    assert idx.shape == ORIG and idx[:50].all() and not idx[50:].any()
    img = np.zeros((8, 8, 3), np.uint8)
    out = draw_masks(img, m, np.array([[200, 0, 0], [0, 200, 0]]), alpha=0.5)
    assert out is img and img[0, 0].tolist() == [100, 0, 0] and img[3, 0].tolist() == [0, 100, 0]
