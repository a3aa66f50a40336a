"""Label parsing, the bad-input corpus, the label cache, image formats and EXIF orientation."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yoloseg.data.errors import DatasetError
from yoloseg.data.images import apply_orientation, imread, label_path, list_images
from yoloseg.data.label_cache import cache_paths, load_labels
from yoloseg.data.labels import check_image_and_label, parse_label_text

TRI = "0.1 0.1 0.5 0.1 0.3 0.5"


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOSEG_CACHE_DIR", str(tmp_path / "user-cache"))


def _image(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(path.suffix, img)
    path.write_bytes(buf.tobytes())
    return path


def _pair(root: Path, name: str, label: str | bytes | None, **kw) -> Path:
    im = _image(root / "images" / "train" / f"{name}.jpg", **kw)
    if label is not None:
        lf = root / "labels" / "train" / f"{name}.txt"
        lf.parent.mkdir(parents=True, exist_ok=True)
        lf.write_bytes(label if isinstance(label, bytes) else label.encode())
    return im


@pytest.mark.parametrize(
    "text, n, repaired",
    [
        ("", 0, False),
        ("\n\n", 0, False),
        (f"0 {TRI}", 1, False),
        (f"0 {TRI}\n1 {TRI} 0.2 0.4", 2, False),
        (f"0 {TRI}\n0 {TRI}", 1, True),  # duplicate removed
        ("0 -0.005 0 1.005 0 0.5 1", 1, False),  # within tolerance, kept as is
        ("0 -0.2 0.1 1.3 0.1 0.5 0.9", 1, True),  # clipped to the image
    ],
)
def test_parse_ok(text, n, repaired):
    classes, polys, notes = parse_label_text(text, nc=2)
    assert len(classes) == len(polys) == n
    assert bool(notes) == repaired
    assert all(p.dtype == np.float32 and p.shape[1] == 2 and len(p) >= 3 for p in polys)


@pytest.mark.parametrize(
    "text, words",
    [
        (f"2 {TRI}", "class id 2"),
        (f"-1 {TRI}", "class id -1"),
        (f"0.5 {TRI}", "class id 0.5"),
        ("0 0.1 0.1 0.5 0.1 0.3", "odd number"),
        ("0 0.1 0.1", "1 point"),
        ("0", "0 point"),
        ("0 0.5 0.5 0.2 0.2", "box-only"),
        (f"0 {TRI} abc 0.2", "non-numeric"),
        ("0 nan 0.1 0.5 0.1 0.3 0.5", "non-finite"),
        ("0 10 10 200 10 100 150", "pixel value"),
    ],
)
def test_parse_rejects(text, words):
    with pytest.raises(ValueError, match=words):
        parse_label_text(text, nc=2)


def test_box_rows_allowed_for_detect():
    classes, polys, _ = parse_label_text("1 0.5 0.5 0.2 0.4", nc=2, task="detect")
    assert classes.tolist() == [1]
    np.testing.assert_allclose(polys[0].min(0), [0.4, 0.3], atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789 .-e\nabn", max_size=200))
def test_parse_never_crashes_on_random_text(text):
    try:
        classes, polys, _ = parse_label_text(text, nc=3)
    except ValueError as e:
        assert "line" in str(e)
    else:
        assert len(classes) == len(polys)
        assert all(len(p) >= 3 and np.isfinite(p).all() and (p >= -0.01).all() and (p <= 1.01).all() for p in polys)
        assert all(0 <= c < 3 for c in classes)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-0.5, 1.5, width=32), min_size=6, max_size=20).filter(lambda v: len(v) % 2 == 0), max_size=5
    )
)
def test_parse_random_polygons(rows):
    text = "\n".join("1 " + " ".join(repr(v) for v in r) for r in rows)
    classes, polys, notes = parse_label_text(text, nc=2)
    assert len(classes) <= len(rows)
    assert all((p >= -0.01).all() and (p <= 1.01).all() for p in polys)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_input_corpus(tmp_path):
    """Every bad case is reported, nothing crashes, nothing on disk changes, the good images load."""
    root = tmp_path / "ds"
    good = [_pair(root, f"good{i}", f"0 {TRI}\n1 0.6 0.6 0.9 0.6 0.8 0.9") for i in range(2)]
    _pair(root, "background_missing", None)
    _pair(root, "background_empty", "")
    cases = {
        "out_of_range": ("0 -0.3 0.2 1.4 0.2 0.5 0.8", "clipped"),
        "class_too_big": (f"7 {TRI}", "class id 7"),
        "odd_values": ("0 0.1 0.1 0.5 0.1 0.3", "odd number"),
        "two_points": ("0 0.1 0.1 0.5 0.5", "box-only"),
        "one_point": ("0 0.1 0.1", "1 point"),
        "non_numeric": (f"0 {TRI} x y", "non-numeric"),
        "duplicates": (f"0 {TRI}\n0 {TRI}", "duplicate"),
        "box_only": ("0 0.5 0.5 0.1 0.1", "box-only"),
        "not_utf8": (b"\xff\xfe\x00\x81", "not utf-8"),
    }
    for name, (text, _) in cases.items():
        _pair(root, name, text)
    img_cases = {"tiny": "below the 10 px", "not_an_image": "unreadable image", "truncated": "truncated JPEG"}
    _pair(root, "tiny", f"0 {TRI}", w=8, h=8)
    (root / "images/train/not_an_image.jpg").write_bytes(b"this is not a jpeg")
    trunc = _pair(root, "truncated", f"0 {TRI}", w=96, h=96)
    trunc.write_bytes(trunc.read_bytes()[:-200])
    before = _tree_digest(root)

    store = load_labels(list_images(root / "images/train"), nc=2)
    report = store.report
    after = _tree_digest(root)
    assert {k: after[k] for k in before} == before  # no input file modified
    assert set(after) - set(before) == {str(root / "labels" / "train.yoloseg-cache.npz")}
    messages = {Path(f).stem: m for f, m in report["messages"]}
    for name, (_, words) in {**cases, **{k: (None, v) for k, v in img_cases.items()}}.items():
        assert words in messages[name], (name, messages.get(name))
    assert report["corrupt"] == 9  # class, odd, 2-pt, 1-pt, non-numeric, box, not-utf8, tiny, not-an-image
    assert set(store.im_files) >= {str(p) for p in good}
    assert report["backgrounds"] == 2
    # the repaired ones are kept: out_of_range, duplicates, truncated
    kept = {Path(f).stem for f in store.im_files}
    assert {"out_of_range", "duplicates", "truncated"} <= kept


def test_nothing_valid_fails_with_the_list(tmp_path):
    root = tmp_path / "ds"
    _pair(root, "a", f"9 {TRI}")
    _pair(root, "b", "0 1 2")
    with pytest.raises(DatasetError, match=r"no usable images[\s\S]*a\.jpg[\s\S]*class id 9[\s\S]*b\.jpg"):
        load_labels(list_images(root / "images/train"), nc=2)


def test_cache_written_beside_labels_and_rebuilt_on_change(tmp_path):
    root = tmp_path / "ds"
    files = [_pair(root, f"im{i}", f"0 {TRI}") for i in range(3)]
    primary = cache_paths([label_path(files[0])])[0]
    assert primary == root / "labels" / "train.yoloseg-cache.npz"
    s1 = load_labels(files, nc=2)
    assert primary.is_file() and len(s1) == 3
    with np.load(primary, allow_pickle=False) as z:  # no pickles, no object arrays
        assert all(z[k].dtype != object for k in z.files)
    mtime = primary.stat().st_mtime_ns
    load_labels(files, nc=2)
    assert primary.stat().st_mtime_ns == mtime  # reused
    lf = label_path(files[1])
    lf.write_text(f"0 {TRI}\n1 {TRI}")
    os.utime(lf, ns=(mtime + 10**9, mtime + 10**9))
    s3 = load_labels(files, nc=2)
    assert s3.report["instances"] == 4  # rebuilt
    primary.write_bytes(b"garbage")  # a corrupt cache is rebuilt, not trusted
    assert load_labels(files, nc=2).report["instances"] == 4
    assert not list(primary.parent.glob(".*.tmp"))  # no temp files left


def test_cache_goes_to_user_folder_when_labels_read_only(tmp_path):
    root = tmp_path / "ds"
    files = [_pair(root, f"im{i}", f"0 {TRI}") for i in range(2)]
    labels_parent = root / "labels"
    mode = labels_parent.stat().st_mode
    labels_parent.chmod(0o555)
    try:
        store = load_labels(files, nc=2)
        assert not (labels_parent / "train.yoloseg-cache.npz").exists()
        user = cache_paths([label_path(files[0])])[1]
        assert user.is_file() and str(user).startswith(str(tmp_path / "user-cache"))
        assert len(store) == 2
    finally:
        labels_parent.chmod(mode)


@pytest.mark.parametrize("ext", ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"])
def test_image_formats(tmp_path, ext):
    im = _image(tmp_path / "images" / f"a.{ext}", w=40, h=30)
    out = check_image_and_label(im, tmp_path / "labels" / "a.txt", nc=1)
    assert out.status == "background" and out.shape == (30, 40)
    assert imread(im).shape == (30, 40, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation):
    from PIL import Image, ImageOps

    arr = np.random.default_rng(orientation).integers(0, 255, (20, 32, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)
    exif = pil.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "images" / "o.png"
    path.parent.mkdir()
    pil.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))[..., ::-1]
    got = imread(path)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    out = check_image_and_label(path, tmp_path / "labels" / "o.txt", nc=1)
    assert out.shape == expected.shape[:2] and out.orientation == orientation
    np.testing.assert_array_equal(apply_orientation(arr[..., ::-1], orientation), expected)
    jpg = tmp_path / "images" / "o.jpg"
    pil.save(jpg, exif=exif, quality=95)
    opencv_oriented = cv2.imdecode(np.fromfile(str(jpg), np.uint8), cv2.IMREAD_COLOR)  # OpenCV applies JPEG EXIF
    np.testing.assert_array_equal(imread(jpg), opencv_oriented)


def test_label_path_and_listing(tmp_path):
    assert label_path("/d/images/x/images/train/a.b.jpg") == Path("/d/images/x/labels/train/a.b.txt")
    files = [_image(tmp_path / "images" / n) for n in ("b.jpg", "a.png", "sub/c.webp")]
    (tmp_path / "images" / "notes.md").write_text("x")
    listed = list_images(tmp_path / "images")
    assert listed == sorted(files, key=str)
    txt = tmp_path / "list.txt"
    txt.write_text("./images/b.jpg\nimages/a.png\n\n")
    assert list_images(txt) == [tmp_path / "images/a.png", tmp_path / "images/b.jpg"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")
