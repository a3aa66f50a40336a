"""SegmentDataset and the loader: reference agreement, counts, rect batches, determinism, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloseg.data.dataset import SegmentDataset, rect_batches
from yoloseg.data.loader import build_dataloader
from yoloseg.data.plots import plot_batch, plot_labels
from yoloseg.data.sample import collate
from yoloseg.data.synthetic import generate_shapes

from .conftest import shared_path

shared = shared_path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    generate_shapes(root, n_train=12, n_val=4, imgsz=96, seed=1)
    return root


def test_val_matches_reference_batch():
    """Images, classes, boxes and overlap masks equal the incumbent's for two coco8-seg val images at 320."""
    ref = np.load(shared("reference", "golden", "loss.npz"))
    names = json.loads(shared("reference", "golden", "loss.json").read_text())["images"]
    files = [shared("data", n) for n in names]
    ds = SegmentDataset(files, imgsz=320, augment=False, rect=False, nc=80)
    b = collate([ds[0], ds[1]])
    np.testing.assert_array_equal(b.images.numpy(), ref["img_uint8"])
    np.testing.assert_array_equal(b.classes.numpy(), ref["cls"].ravel())
    np.testing.assert_array_equal(b.batch_idx.numpy(), ref["batch_idx"])
    np.testing.assert_allclose(b.boxes_xywhn.numpy(), ref["bboxes_xywhn"], atol=1e-6)
    np.testing.assert_array_equal(b.masks.numpy(), ref["masks_overlap"])


@pytest.mark.parametrize(
    "name, split, images, instances, backgrounds",
    [
        ("coco8-seg", "train", 4, 13, 0),
        ("coco8-seg", "val", 4, 17, 0),
        ("coco128-seg", "train", 103, 817, 2),
        ("coco128-seg", "val", 25, 112, 0),
    ],
)
def test_shared_counts(name, split, images, instances, backgrounds):
    ds = SegmentDataset(shared("data", name, "images", split), imgsz=64, nc=80)
    lab = ds.labels
    assert (lab["images"], lab["instances"], lab["backgrounds"], lab["corrupt"]) == (images, instances, backgrounds, 0)
    assert lab["boxes_xywhn"].shape == (instances, 4) and (lab["boxes_xywhn"] >= -0.01).all()


def test_rect_batches_reference_shapes():
    shapes = np.array([[480, 640]] * 3 + [[640, 480], [500, 381], [427, 640]], np.int64)
    order, batch, batch_shapes = rect_batches(shapes, batch_size=3, imgsz=640, stride=32, pad=0.5)
    assert batch.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch_shapes.tolist() == [[512, 672], [672, 672]]  # all-landscape 4:3 -> 512x672; mixed -> 672
    assert sorted(order.tolist()) == list(range(6))


def test_rect_val_dataset_order_and_shapes():
    ds = SegmentDataset(
        shared("data", "coco8-seg", "images", "val"), imgsz=320, rect=True, batch_size=2, pad=0.5, nc=80
    )
    ar = ds.store.shapes[:, 0] / ds.store.shapes[:, 1]
    assert (np.diff(ar) >= 0).all()  # iterates in aspect-ratio order
    for i in range(len(ds)):
        s = ds[i]
        assert tuple(s.image.shape[1:]) == tuple(ds.batch_shapes[ds.batch[i]])
        assert s.masks.shape == (s.image.shape[1] // 4, s.image.shape[2] // 4)
        (gh, gw), (left, top) = s.ratio_pad
        assert 0 < gh <= 1 and left >= 0 and top >= 0


def test_train_samples_and_options(shapes):
    hyp = {"degrees": 5, "copy_paste": 0.3, "mixup": 0.2}
    ds = SegmentDataset(shapes / "images/train", imgsz=64, augment=True, hyp=hyp, nc=5, overlap_mask=False)
    s = ds[0]
    assert s.image.shape == (3, 64, 64) and s.image.dtype == torch.uint8
    assert s.masks.shape == (len(s.classes), 16, 16) and s.boxes_xywhn.shape == (len(s.classes), 4)
    if len(s.classes):
        assert (s.boxes_xywhn >= 0).all() and (s.boxes_xywhn <= 1).all()
    ds.close_mosaic()
    assert ds.hyp.mosaic == ds.hyp.mixup == ds.hyp.copy_paste == 0
    rect = SegmentDataset(shapes / "images/train", imgsz=64, augment=True, hyp=hyp, nc=5, rect=True, batch_size=4)
    assert all(tuple(rect[i].image.shape[1:]) == tuple(rect.batch_shapes[rect.batch[i]]) for i in range(4))
    single = SegmentDataset(shapes / "images/train", imgsz=64, nc=5, single_cls=True, fraction=0.5)
    assert len(single) == 6 and set(single.store.classes.tolist()) <= {0}
    only = SegmentDataset(shapes / "images/train", imgsz=64, nc=5, classes=[1])
    assert set(only.store.classes.tolist()) <= {1} and len(only) == 12
    cached = SegmentDataset(shapes / "images/val", imgsz=64, nc=5, cache="ram")
    plain = SegmentDataset(shapes / "images/val", imgsz=64, nc=5)
    assert torch.equal(cached[1].image, plain[1].image) and torch.equal(cached[1].masks, plain[1].masks)
    disk = SegmentDataset(shapes / "images/val", imgsz=64, nc=5, cache="disk")
    assert torch.equal(disk[1].image, plain[1].image)


def test_auto_cache_keeps_small_sets_in_ram(shapes, monkeypatch):
    """cache="auto" keeps the resized images in RAM when they fit the budget (same samples as reading from disk),
    and reads from disk when they do not, when the free memory is unknown, or split between a node's processes."""
    import yoloseg.data.dataset as dataset_module

    hyp = {"mosaic": 1.0}
    plain = SegmentDataset(shapes / "images/train", imgsz=64, augment=True, hyp=hyp, nc=5)
    need = sum(plain.load_image(i).nbytes for i in range(len(plain)))
    assert dataset_module.resized_bytes(plain.store.shapes, 64) == need

    def build():
        return SegmentDataset(shapes / "images/train", imgsz=64, augment=True, hyp=hyp, nc=5, cache="auto")

    monkeypatch.setattr(dataset_module, "available_memory", lambda: 100 * need)
    monkeypatch.setattr(dataset_module, "AUTO_CACHE_MAX_BYTES", need)
    auto = build()
    assert auto._images is not None and sum(x.nbytes for x in auto._images) == need
    for i in (0, 5):
        a, b = auto[i], plain[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and torch.equal(a.classes, b.classes)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes on this node: half the budget each
    assert build()._images is None
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(dataset_module, "AUTO_CACHE_MAX_BYTES", need - 1)
    assert build()._images is None
    monkeypatch.setattr(dataset_module, "AUTO_CACHE_MAX_BYTES", 1 << 30)
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 0)  # unknown: no cache
    assert build()._images is None


def _batches(loader, n=2):
    out = []
    for k, b in enumerate(loader):
        if k == n:
            break
        out.append(b)
    return out


def test_same_seed_same_batches_across_worker_counts(shapes):
    ds = SegmentDataset(
        shapes / "images/train", imgsz=64, augment=True, hyp={"degrees": 10, "mixup": 0.5}, nc=5, seed=3
    )
    a = _batches(build_dataloader(ds, 4, workers=0, shuffle=True, seed=3))
    b = _batches(build_dataloader(ds, 4, workers=2, shuffle=True, seed=3))
    for x, y in zip(a, b):
        assert x.paths == y.paths
        assert (
            torch.equal(x.images, y.images)
            and torch.equal(x.masks, y.masks)
            and torch.equal(x.boxes_xywhn, y.boxes_xywhn)
        )
    loader = build_dataloader(ds, 4, workers=0, shuffle=True, seed=3)
    loader.set_epoch(1)
    c = _batches(loader)
    assert c[0].paths != a[0].paths or not torch.equal(c[0].images, a[0].images)
    assert a[0].images.shape == (4, 3, 64, 64) and a[0].masks.shape == (4, 16, 16)
    assert a[0].batch_idx.shape == a[0].classes.shape and a[0].boxes_xywhn.shape[1] == 4


def test_plots(shapes, tmp_path):
    names = {i: n for i, n in enumerate(["circle", "ellipse", "rectangle", "triangle", "star"])}
    ds = SegmentDataset(shapes / "images/train", imgsz=64, augment=True, nc=5)
    out = plot_labels(ds.labels, names, tmp_path)
    assert out == tmp_path / "labels.jpg" and out.stat().st_size > 1000
    assert plot_labels(ds, names, tmp_path / "again").is_file()  # the dataset itself works too
    batch = collate([ds[i] for i in range(4)])
    p = plot_batch(batch, names, tmp_path / "train_batch0.jpg")
    assert p.stat().st_size > 1000
    ds2 = SegmentDataset(shapes / "images/val", imgsz=64, nc=5, overlap_mask=False)
    vb = collate([ds2[i] for i in range(2)], overlap=False)
    plot_batch(vb, names, tmp_path / "val_batch0_labels.jpg")
    assert (tmp_path / "val_batch0_labels.jpg").is_file()
    pred = {
        "boxes": torch.tensor([[2.0, 2, 30, 30], [5, 5, 9, 9]]),
        "conf": torch.tensor([0.9, 0.1]),
        "cls": torch.tensor([1.0, 0]),
    }
    pred["masks"] = torch.ones(2, 16, 16, dtype=torch.uint8)
    plot_batch(vb, names, tmp_path / "val_batch0_pred.jpg", preds=[pred, {**pred, "masks": None}])
    assert (tmp_path / "val_batch0_pred.jpg").is_file()
