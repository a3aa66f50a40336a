"""Pure polygon helpers: clipping to a rectangle, extents, resampling (§5.9), joining multi-part outlines."""

from __future__ import annotations

import numpy as np


def _clip_half_plane(poly: np.ndarray, axis: int, limit: float, keep_below: bool) -> np.ndarray:
    """One Sutherland-Hodgman pass: keep the part of closed polygon (K, 2) on one side of coordinate `limit`."""
    a = poly[:, axis]
    inside = a <= limit if keep_below else a >= limit
    if inside.all() or len(poly) == 0:
        return poly
    if not inside.any():
        return poly[:0]
    nxt = np.concatenate([poly[1:], poly[:1]])
    b = nxt[:, axis]
    in_b = np.concatenate([inside[1:], inside[:1]])
    denom = np.where(b == a, 1.0, b - a)
    cross = poly + ((limit - a) / denom)[:, None] * (nxt - poly)
    cross[:, axis] = limit
    # each edge (p -> q) emits [the crossing if the edge crosses, q if q is inside]
    out = np.empty((len(poly), 2, 2), poly.dtype)
    out[:, 0], out[:, 1] = cross, nxt
    valid = np.empty((len(poly), 2), bool)
    valid[:, 0], valid[:, 1] = inside != in_b, in_b
    return out[valid]


def clip_polygon(poly: np.ndarray, x_max: float, y_max: float, x_min: float = 0.0, y_min: float = 0.0) -> np.ndarray:
    """Intersection of polygon (K, 2) xy with the rectangle [x_min, x_max] x [y_min, y_max] (may be empty (0, 2))."""
    poly = np.asarray(poly)
    if len(poly) == 0:
        return poly.reshape(0, 2)
    x, y = poly[:, 0], poly[:, 1]  # per column: an axis-0 reduction of (K, 2) is ~10x slower in NumPy
    if x.min() >= x_min and y.min() >= y_min and x.max() <= x_max and y.max() <= y_max:
        return poly
    for axis, limit, below in ((0, x_min, False), (0, x_max, True), (1, y_min, False), (1, y_max, True)):
        poly = _clip_half_plane(poly, axis, limit, below)
    return poly.reshape(-1, 2)


def flat_points(polygons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All the points of N polygons as one (P, 2) array, and each polygon's point count (N,): one NumPy call over
    the points instead of one per polygon."""
    lengths = np.fromiter((len(p) for p in polygons), np.intp, len(polygons))
    if not len(polygons):
        return np.zeros((0, 2), np.float32), lengths
    return np.concatenate([np.reshape(p, (-1, 2)) for p in polygons]), lengths


def polygon_boxes(polygons: list[np.ndarray]) -> np.ndarray:
    """(N, 4) float32 xyxy extents of N polygons (zeros for an empty polygon)."""
    boxes = np.zeros((len(polygons), 4), np.float32)
    points, lengths = flat_points(polygons)
    kept = np.flatnonzero(lengths)
    if len(kept):  # one reduction over all the points (an axis-0 one per polygon: ~38 us for 1000 points)
        starts = (np.cumsum(lengths) - lengths)[kept]
        boxes[kept, :2] = np.minimum.reduceat(points, starts, axis=0)
        boxes[kept, 2:] = np.maximum.reduceat(points, starts, axis=0)
    return boxes


def polygon_area(poly: np.ndarray) -> float:
    """Absolute shoelace area of a (K, 2) polygon."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def resample_polygon(poly: np.ndarray, n: int) -> np.ndarray:
    """Resample a polygon to `n` points the way the incumbent's validation does (§5.9).

    The polygon is closed by repeating vertex 0; for K+1 closed vertices, n - (K+1) evenly spaced positions on
    [0, K] are merged with the integer vertex positions and x, y are linearly interpolated. A polygon that already
    has n points is returned unchanged. Returns (n, 2) float32 (K+1 points when K+1 >= n).
    """
    poly = np.asarray(poly, np.float32)
    if len(poly) == n:
        return poly
    closed = np.concatenate([poly, poly[:1]])
    k = len(closed)
    vertices = np.arange(k)
    extra = np.linspace(0, k - 1, n - k) if k < n else np.zeros(0)
    t = np.sort(np.concatenate([extra, vertices]), kind="stable")
    x = np.interp(t, vertices, closed[:, 0])
    y = np.interp(t, vertices, closed[:, 1])
    return np.stack([x, y], axis=1).astype(np.float32)


def resample_count(polygons: list[np.ndarray], n: int = 1000) -> int:
    """The point count the incumbent resamples an image's polygons to: n, or the largest vertex count + 1."""
    longest = max((len(p) for p in polygons), default=0)
    return longest + 1 if longest > n else n


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """Join the parts of a multi-part outline into one closed polyline (K, 2).

    Consecutive parts are bridged at their closest vertex pair; each bridge is walked out and back, so the
    joined outline rasterises (even-odd or non-zero) to the union of the parts as long as they do not overlap.
    """
    parts = [np.asarray(p, np.float32).reshape(-1, 2) for p in parts if len(p)]
    if not parts:
        return np.zeros((0, 2), np.float32)
    links = []  # (exit vertex in part k, entry vertex in part k + 1)
    for a, b in zip(parts[:-1], parts[1:]):
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        links.append((int(i), int(j)))
    return np.concatenate(_walk(parts, links, 0, 0)).astype(np.float32)


def _walk(parts: list[np.ndarray], links: list[tuple[int, int]], k: int, entry: int) -> list[np.ndarray]:
    """Points of part k from `entry` round to `entry` again, detouring into part k + 1 at the link vertex."""
    p = parts[k]
    loop = np.roll(p, -entry, axis=0)
    loop = np.concatenate([loop, loop[:1]])
    if k == len(parts) - 1:
        return [loop]
    exit_pos = (links[k][0] - entry) % len(p)
    head, tail = loop[: exit_pos + 1], loop[exit_pos:]
    return [head, *_walk(parts, links, k + 1, links[k][1]), tail]
