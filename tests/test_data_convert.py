"""COCO -> YOLO-seg conversion (round trip against pycocotools) and the synthetic shapes generator."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloseg.data.augment.masks import polygon_mask
from yoloseg.data.convert import convert_coco
from yoloseg.data.dataset_yaml import check_dataset
from yoloseg.data.images import list_images
from yoloseg.data.label_cache import load_labels
from yoloseg.data.synthetic import SHAPE_NAMES, generate_shapes
from yoloseg.metrics.rle import decode_counts as rle_counts
from yoloseg.metrics.rle import decode_mask as rle_decode

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (a dev extra) is needed for the round trip")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs NumPy 2 copy keyword


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOSEG_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.setenv("YOLOSEG_DATASETS_DIR", str(tmp_path / "datasets"))


def _coco(tmp_path: Path):
    """Two images: polygons (one in two parts), a crowd RLE and a non-crowd RLE; category ids 3 and 7."""
    images_dir = tmp_path / "coco" / "val2017"
    images_dir.mkdir(parents=True)
    h, w = 240, 320
    for i in (1, 2):
        cv2.imwrite(str(images_dir / f"{i:012d}.jpg"), np.full((h, w, 3), 100 * i, np.uint8))
    blob = np.zeros((h, w), np.uint8)
    cv2.circle(blob, (200, 120), 48, 1, -1)
    rle = mask_api.encode(np.asfortranarray(blob))
    rle["counts"] = rle["counts"].decode()
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "iscrowd": 0,
            "segmentation": [[20, 20, 120, 20, 120, 100, 20, 100]],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": [[160, 160, 220, 160, 200, 220], [240, 160, 300, 160, 280, 220]],
        },
        {"id": 3, "image_id": 2, "category_id": 3, "iscrowd": 1, "segmentation": rle},
        {"id": 4, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": rle},
    ]
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h} for i in (1, 2)],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": anns,
    }
    js = tmp_path / "instances_val2017.json"
    js.write_text(json.dumps(data))
    return js, images_dir, anns, (h, w)


def _yolo_mask(label_file: Path, row: int, h: int, w: int) -> tuple[int, np.ndarray]:
    values = label_file.read_text().splitlines()[row].split()
    poly = np.array(values[1:], np.float32).reshape(-1, 2) * [w, h]
    return int(values[0]), polygon_mask(poly, (h, w))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def test_rle_decoding_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = (rng.random((23, 31)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
        rle = mask_api.encode(np.asfortranarray(m))
        np.testing.assert_array_equal(rle_decode(rle), m)
        np.testing.assert_array_equal(rle_decode({"size": rle["size"], "counts": rle["counts"].decode()}), m)
    assert rle_counts([3, 4]) == [3, 4]


def test_convert_round_trip(tmp_path):
    js, images_dir, anns, (h, w) = _coco(tmp_path)
    out = tmp_path / "yolo"
    yaml_file = convert_coco(js, images_dir, out)
    d = check_dataset(yaml_file)
    assert d["names"] == {0: "dog", 1: "cat"}  # ids 3, 7 -> 0, 1 in id order
    assert len(list_images(d["val"])) == 2
    lab1 = out / "labels" / "val2017" / "000000000001.txt"
    assert len(lab1.read_text().splitlines()) == 2
    assert not (out / "labels" / "val2017" / "000000000002.txt").exists()  # crowd skipped, RLE needs use_rle
    for row, ann in enumerate(anns[:2]):
        cls, ours = _yolo_mask(lab1, row, h, w)
        ref = mask_api.decode(mask_api.merge(mask_api.frPyObjects(ann["segmentation"], h, w)))
        assert cls == {3: 0, 7: 1}[ann["category_id"]]
        assert _iou(ours > 0, ref > 0) > 0.9  # one joined outline covers both parts
    store = load_labels(list_images(d["val"]), nc=2)
    assert store.report["instances"] == 2 and store.report["backgrounds"] == 1


def test_convert_rle_when_asked(tmp_path):
    js, images_dir, anns, (h, w) = _coco(tmp_path)
    out = tmp_path / "yolo"
    convert_coco(js, images_dir, out, use_rle=True, skip_crowd=False)
    lab2 = out / "labels" / "val2017" / "000000000002.txt"
    assert len(lab2.read_text().splitlines()) == 2
    ref = mask_api.decode(anns[3]["segmentation"]) > 0
    for row in range(2):
        _, ours = _yolo_mask(lab2, row, h, w)
        assert _iou(ours > 0, ref) > 0.9


def test_generate_shapes_deterministic(tmp_path):
    a = generate_shapes(tmp_path / "a", n_train=6, n_val=2, imgsz=64, seed=5)
    b = generate_shapes(tmp_path / "b", n_train=6, n_val=2, imgsz=64, seed=5)

    def digest(root: Path) -> dict:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
        }

    assert digest(a.parent) == digest(b.parent)
    d = check_dataset(a)
    assert d["names"] == dict(enumerate(SHAPE_NAMES))
    store = load_labels(list_images(d["train"]), nc=len(SHAPE_NAMES))
    assert store.report["corrupt"] == 0 and store.report["repaired"] == 0 and store.report["instances"] >= 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed away
    c = generate_shapes(tmp_path / "c", n_train=6, n_val=2, imgsz=64, seed=6)
    assert digest(c.parent) != digest(a.parent)
