"""COCO run-length encoding and decoding of binary masks (compressed string form), without pycocotools."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rle_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a (H, W) binary mask in column-major order, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] == 1 else runs


def counts_to_string(counts: list[int]) -> str:
    """The COCO compressed string of run lengths (5-bit groups, deltas from the run two before)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def encode_mask(mask: np.ndarray) -> dict:
    """{'size': [h, w], 'counts': str} for a (H, W) binary mask (pycocotools-compatible)."""
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(rle_counts(mask))}


def decode_counts(counts: str | bytes | list[int]) -> list[int]:
    """Run lengths of a COCO RLE: a list as is, or decoded from COCO's compressed string form."""
    if isinstance(counts, list):
        return [int(c) for c in counts]
    s = counts.encode() if isinstance(counts, str) else counts
    out: list[int] = []
    p = 0
    while p < len(s):
        value, shift, more = 0, 0, True
        while more:  # 5 data bits per character (offset 48), bit 0x20 = more characters follow
            c = s[p] - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:  # sign bit of the last chunk
                value |= -1 << shift
        if len(out) > 2:
            value += out[-2]  # runs after the second are stored as differences
        out.append(value)
    return out


def decode_mask(rle: dict) -> np.ndarray:
    """(h, w) uint8 mask of a COCO RLE {"size": [h, w], "counts": ...} (column-major runs, starting with 0s)."""
    h, w = (int(v) for v in rle["size"])
    flat = np.zeros(h * w, np.uint8)
    pos, value = 0, 0
    for run in decode_counts(rle["counts"]):
        flat[pos : pos + run] = value
        pos += run
        value ^= 1
    return flat.reshape(w, h).T.copy()


def encode_masks(
    masks: torch.Tensor | None,
    shape: tuple[int, int],
    orig_shape: tuple[int, int],
    ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> list[dict]:
    """Input-resolution masks (N, H, W) -> RLEs at the original image size.

    As the incumbent's JSON path: remove the letterbox padding, bilinear resize to (h0, w0), then a truncating cast
    (only pixels interpolating to exactly 1 survive).
    """
    if masks is None or len(masks) == 0:
        return []
    h, w = shape
    h0, w0 = orig_shape
    if ratio_pad is None:
        gain = min(h / h0, w / w0)
        pad_w, pad_h = (w - w0 * gain) / 2, (h - h0 * gain) / 2
    else:
        pad_w, pad_h = ratio_pad[1]
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = h - round(pad_h + 0.1), w - round(pad_w + 0.1)
    m = masks[:, top:bottom, left:right].float()[None]
    m = F.interpolate(m, (h0, w0), mode="bilinear", align_corners=False)[0]
    binary = m.to(torch.uint8).cpu().numpy()  # truncation, as the reference does
    return [encode_mask(b) for b in binary]
