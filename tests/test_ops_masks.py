"""Mask assembly (§5.5): crop convention, native factor, and windowed results bit-identical to the full reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yoloseg.ops import masks as M
from yoloseg.ops.boxes import scale_boxes
from yoloseg.ops.masks import crop_mask, native_factor, process_mask, process_mask_native, scale_masks


def reference_upsample(protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, shape, crop=True):
    """The straightforward predict path: full-size bilinear upsample of all logits, > 0, crop."""
    c, mh, mw = protos.shape
    logits = (coeffs @ protos.view(c, -1)).view(-1, mh, mw)
    masks = (F.interpolate(logits[None], shape, mode="bilinear", align_corners=False)[0] > 0).to(torch.uint8)
    return crop_mask(masks, boxes) if crop else masks


def reference_native(protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, shape, crop=True):
    """§5.5 (b) step by step at full size."""
    c, mh, mw = protos.shape
    h0, w0 = shape
    logits = (coeffs @ protos.view(c, -1)).view(-1, mh, mw)
    f = native_factor(mh, mw, h0, w0)
    if f > 1:
        logits = F.interpolate(logits[None], (f * mh, f * mw), mode="bilinear", align_corners=False)[0]
    gain = min(f * mh / h0, f * mw / w0)
    ch, cw = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    top, left = round((f * mh - ch) / 2 - 0.1), round((f * mw - cw) / 2 - 0.1)
    crop_ = logits[None, :, top : top + ch, left : left + cw]
    masks = (F.interpolate(crop_, (h0, w0), mode="bilinear", align_corners=False)[0] > 0).to(torch.uint8)
    return crop_mask(masks, boxes) if crop else masks


def random_case(seed: int, n: int, height: int, width: int):
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(32, height // 4, width // 4, generator=g)
    coeffs = torch.randn(n, 32, generator=g) * 0.3
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 1.1 - 10  # some boxes leave the image
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 0.6], 1)
    return protos, coeffs, boxes


# box -> kept columns (and rows) of a 6 x 6 mask: keep i iff x1 <= i < x2
CROP_CASES = [
    ([1.0, 1.0, 3.0, 3.0], [1, 2]),
    ([0.5, 0.5, 2.5, 2.5], [1, 2]),
    ([0.0, 0.0, 0.1, 0.1], [0]),
    ([2.0, 2.0, 2.0, 2.0], []),
    ([-5.0, -5.0, 10.0, 10.0], [0, 1, 2, 3, 4, 5]),
    ([4.99, 4.99, 5.01, 5.01], [5]),
]


@pytest.mark.parametrize(("box", "kept"), CROP_CASES)
def test_crop_mask_edge_convention(box: list[float], kept: list[int]) -> None:
    masks = torch.ones(1, 6, 6, dtype=torch.uint8)
    out = crop_mask(masks, torch.tensor([box]))
    assert out.dtype == torch.uint8
    want = torch.zeros(6, 6, dtype=torch.uint8)
    for i in kept:
        for j in kept:
            want[i, j] = 1
    assert torch.equal(out[0], want)


def test_crop_mask_empty_and_float() -> None:
    assert crop_mask(torch.zeros(0, 4, 4), torch.zeros(0, 4)).shape == (0, 4, 4)
    out = crop_mask(torch.full((1, 3, 3), 2.5), torch.tensor([[1.0, 0.0, 3.0, 1.0]]))
    assert out.tolist() == [[[0.0, 2.5, 2.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]


def test_process_mask_val_path_hand_case() -> None:
    # one prototype: +1 on the left half of an 8 x 8 grid; the box covers input pixels 4..24 (grid 1..6)
    protos = torch.full((1, 8, 8), -1.0)
    protos[0, :, :4] = 1.0
    boxes = torch.tensor([[4.0, 4.0, 24.0, 24.0]])
    out = process_mask(protos, torch.tensor([[2.0]]), boxes, (32, 32))
    assert out.shape == (1, 8, 8)
    assert out.dtype == torch.uint8
    want = torch.zeros(8, 8, dtype=torch.uint8)
    want[1:6, 1:4] = 1
    assert torch.equal(out[0], want)
    assert process_mask(protos, torch.tensor([[-2.0]]), boxes, (32, 32)).sum() == 5 * 2  # grid columns 4, 5
    assert process_mask(protos, torch.tensor([[2.0]]), boxes, (32, 32), crop=False).sum() == 32
    assert process_mask(protos, torch.zeros(0, 1), torch.zeros(0, 4), (32, 32)).shape == (0, 8, 8)


@pytest.mark.parametrize(
    ("seed", "n", "height", "width"),
    [(0, 7, 160, 224), (1, 1, 320, 96), (2, 12, 256, 256), (3, 3, 64, 64), (4, 5, 32, 96), (5, 0, 128, 128)],
)
def test_process_mask_upsample_windowed_equals_full(seed: int, n: int, height: int, width: int) -> None:
    protos, coeffs, boxes = random_case(seed, n, height, width)
    got = process_mask(protos, coeffs, boxes, (height, width), upsample=True)
    assert got.shape == (n, height, width)
    if n == 0:  # F.interpolate rejects empty batches; the result is simply empty
        return
    assert torch.equal(got, reference_upsample(protos, coeffs, boxes, (height, width)))
    uncropped = process_mask(protos, coeffs, boxes, (height, width), upsample=True, crop=False)
    assert torch.equal(uncropped, reference_upsample(protos, coeffs, boxes, (height, width), crop=False))


@pytest.mark.parametrize(
    ("seed", "proto_hw", "orig_hw"),
    [
        (0, (160, 224), (1080, 810)),
        (1, (320, 320), (333, 500)),  # factor 4
        (2, (256, 256), (252, 256)),  # factor 2
        (3, (64, 64), (40, 60)),  # small outputs take PyTorch's other kernel
        (4, (96, 128), (700, 33)),
        (5, (128, 128), (100, 90)),  # downscaling
        (6, (640, 640), (160, 120)),  # the content already has the original size: the kernel copies
    ],
)
def test_process_mask_native_windowed_equals_full(seed: int, proto_hw, orig_hw) -> None:
    height, width = proto_hw
    protos, coeffs, boxes = random_case(seed, 6, height, width)
    boxes = scale_boxes((height, width), boxes, orig_hw)
    got = process_mask_native(protos, coeffs, boxes, orig_hw)
    assert got.shape == (6, *orig_hw)
    assert torch.equal(got, reference_native(protos, coeffs, boxes, orig_hw))
    uncropped = process_mask_native(protos, coeffs[:2], boxes[:2], orig_hw, crop=False)
    assert torch.equal(uncropped, reference_native(protos, coeffs[:2], boxes[:2], orig_hw, crop=False))
    assert process_mask_native(protos, coeffs[:0], boxes[:0], orig_hw).shape == (0, *orig_hw)


def test_exact_path_and_special_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pixel through the exact kernel replay, NaN / inverted boxes, and 3 instances on one thread."""
    protos, coeffs, boxes = random_case(6, 3, 160, 192)
    boxes[1] = torch.tensor([float("nan"), 10.0, 50.0, 60.0])
    boxes[2] = torch.tensor([80.0, 90.0, 20.0, 100.0])
    monkeypatch.setattr(M, "_SIGN_TOLERANCE", float("inf"))
    got = process_mask(protos, coeffs, boxes, (160, 192), upsample=True)
    assert torch.equal(got, reference_upsample(protos, coeffs, boxes, (160, 192)))
    assert got[1:].sum() == 0
    monkeypatch.setattr(M, "_SIGN_TOLERANCE", 0.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        got = process_mask(protos, coeffs, boxes, (160, 192), upsample=True)
        assert torch.equal(got, reference_upsample(protos, coeffs, boxes, (160, 192)))
    finally:
        torch.set_num_threads(threads)


def test_many_small_boxes() -> None:
    """100 small boxes on a 640 x 640 input: every mask stays inside its box window and equals the reference."""
    protos, coeffs, _ = random_case(7, 100, 640, 640)
    xy = torch.rand(100, 2, generator=torch.Generator().manual_seed(0)) * 600
    boxes = torch.cat([xy, xy + 40], 1)
    out = process_mask(protos, coeffs, boxes, (640, 640), upsample=True)
    assert out.shape == (100, 640, 640)
    assert out.sum(dim=(1, 2)).le(41 * 41).all()
    assert torch.equal(out[:20], reference_upsample(protos, coeffs[:20], boxes[:20], (640, 640)))


# (mh, mw, h0, w0) -> f: P = (4mh - round(h0 g)) | (4mw - round(w0 g)); f = 1, 2, 4 for P mod 8 = 0, 4, other
FACTOR_CASES = [
    ((80, 80, 1080, 810), 1),  # P = 0 | 80
    ((160, 160, 480, 640), 1),  # P = 160 | 0
    ((160, 160, 333, 500), 4),  # P = 214
    ((160, 160, 636, 640), 2),  # P = 4
    ((64, 48, 256, 192), 1),  # no padding
]


@pytest.mark.parametrize(("args", "want"), FACTOR_CASES)
def test_native_factor(args: tuple[int, int, int, int], want: int) -> None:
    assert native_factor(*args) == want


def test_scale_masks() -> None:
    masks = torch.zeros(2, 8, 8)
    masks[:, 2:6, :] = 1.0  # content rows 2..5 of a letterboxed 8 x 8 (original 4 x 8)
    out = scale_masks(masks, (4, 8))
    assert out.shape == (2, 4, 8)
    assert torch.equal(out, torch.ones(2, 4, 8))
    assert torch.equal(scale_masks(masks, (8, 8)), masks)  # same size: identity
    assert scale_masks(masks.to(torch.uint8), (8, 16)).dtype == torch.float32
    padded = scale_masks(masks, (4, 8), ratio_pad=((1.0, 1.0), (0, 2)))
    assert torch.equal(padded, out)
    assert torch.equal(
        scale_masks(masks, (4, 8), padding=False), torch.zeros(2, 4, 8).index_fill_(1, torch.tensor([2, 3]), 1)
    )
