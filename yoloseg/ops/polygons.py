"""Polygons from binary masks (§5.7): one merged outline per mask, or outlines with holes and parts.

Contours are traced on each mask's bounding window only (OpenCV gives identical contours for a tight crop with an
offset), so the cost follows the objects' size, not the image's.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch


def _as_uint8(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    return np.ascontiguousarray(masks if masks.dtype == np.uint8 else (masks != 0).astype(np.uint8))


def _find_contours(mask: np.ndarray, mode: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """cv2.findContours(mode, CHAIN_APPROX_SIMPLE) of mask (H, W) traced on its bounding window.

    Returns the contours as (K, 2) int32 arrays in the mask's pixel coordinates, in OpenCV's order, and the
    hierarchy (n, 4) [next, previous, first child, parent] (None when there is no contour).
    """
    x, y, w, h = cv2.boundingRect(mask)  # of the non-zero pixels
    if w == 0 or h == 0:
        return [], None
    window = np.ascontiguousarray(mask[y : y + h, x : x + w])
    contours, hierarchy = cv2.findContours(window, mode, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    return [c.reshape(-1, 2) for c in contours], hierarchy[0]


def _closest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices (i, j) of the closest vertices a[i], b[j] (squared distance, first in row-major order on ties)."""
    d = ((a[:, None, :].astype(np.int64) - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    return int(i), int(j)


def merge_multi_segment(segments: list[np.ndarray]) -> list[np.ndarray]:
    """Join several outlines (each (K_i, 2)) into one polyline, returned as consecutive pieces.

    Consecutive outlines are linked at their closest vertex pair. A forward pass appends the first and the last
    outline whole (rolled to start at the link, closed) and each middle outline from its first link to its second
    (reversed first when the links descend); a backward pass then appends the rest of each middle outline, so the
    path walks out along the links and returns. Concatenate the pieces for the (K, 2) polyline.
    """
    segments = [np.asarray(s).reshape(-1, 2) for s in segments]
    links: list[list[int]] = [[] for _ in segments]
    for i in range(1, len(segments)):
        a, b = _closest_pair(segments[i - 1], segments[i])
        links[i - 1].append(a)
        links[i].append(b)
    last = len(segments) - 1
    pieces = []
    for i, idx in enumerate(links):
        seg = segments[i]
        if len(idx) == 2 and idx[0] > idx[1]:  # walk it backwards: reverse, and re-index the links
            idx, seg = [len(seg) - 1 - k for k in idx], seg[::-1]
        seg = np.roll(seg, -idx[0], axis=0)
        segments[i] = seg = np.concatenate([seg, seg[:1]])
        pieces.append(seg if i in (0, last) else seg[: idx[1] - idx[0] + 1])
    for i in range(last - 1, 0, -1):
        pieces.append(segments[i][abs(links[i][1] - links[i][0]) :])
    return pieces


def masks_to_polygons(masks: np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """One polygon per mask: its outer contours, merged into one polyline when there are several (holes dropped).

    Args:
        masks: (N, H, W) binary masks (uint8 / bool, numpy or torch).
    Returns:
        N float32 arrays (K, 2) of x, y pixel indices in the masks' grid; (0, 2) for an empty mask.
    """
    polygons = []
    for mask in _as_uint8(masks):
        contours, _ = _find_contours(mask, cv2.RETR_EXTERNAL)
        if not contours:
            polygons.append(np.zeros((0, 2), dtype=np.float32))
        elif len(contours) == 1:
            polygons.append(contours[0].astype(np.float32))
        else:
            polygons.append(np.concatenate(merge_multi_segment(contours)).astype(np.float32))
    return polygons


def mask_to_polygons(mask: np.ndarray | torch.Tensor, holes: bool = True, parts: bool = True) -> list[dict[str, Any]]:
    """Every outer contour of one mask with its holes.

    Args:
        mask: (H, W) binary mask.
        holes: trace holes (two-level hierarchy); False gives outer contours with empty hole lists.
        parts: keep every separate part; False keeps only the part with the largest outline area.
    Returns:
        A list (OpenCV order) of {"exterior": (K, 2) float32, "holes": [(K, 2) float32, ...]} in pixel indices.
    """
    mode = cv2.RETR_CCOMP if holes else cv2.RETR_EXTERNAL
    contours, hierarchy = _find_contours(_as_uint8(mask), mode)
    result = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:
            continue  # a hole, listed with its parent
        hole_list, child = [], hierarchy[i][2]
        while child != -1:
            hole_list.append(contours[child].astype(np.float32))
            child = hierarchy[child][0]
        result.append({"exterior": contour.astype(np.float32), "holes": hole_list})
    if not parts and len(result) > 1:
        areas = [cv2.contourArea(p["exterior"]) for p in result]
        result = [result[int(np.argmax(areas))]]
    return result
