"""Parse and verify one image and its YOLO-seg label file. Nothing here raises on bad input or touches the disk.

A label row is `class x1 y1 x2 y2 ... xn yn` with coordinates normalised to 0-1 (n >= 3). For task="detect" a
five-value row `class cx cy w h` is also accepted (kept as its rectangle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import verify_image
from .polygons import clip_polygon

TOLERANCE = 0.01  # coordinates in [-0.01, 1.01] are accepted as they are
PIXEL_LIKE = 2.0  # beyond this a coordinate is taken for a pixel value, not a normalised one

STATUS_OK, STATUS_BACKGROUND, STATUS_REPAIRED, STATUS_CORRUPT = "ok", "background", "repaired", "corrupt"


@dataclass
class ImageLabels:
    """The checked labels of one image. polygons are normalised (K_i, 2) float32; classes (N,) int64."""

    im_file: str
    shape: tuple[int, int] = (0, 0)
    orientation: int = 1
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    polygons: list[np.ndarray] = field(default_factory=list)
    status: str = STATUS_OK
    messages: list[str] = field(default_factory=list)


class _RowError(ValueError):
    """A problem that makes a label file unusable (the image is skipped)."""


def _parse_row(tokens: list[str], line_no: int, nc: int, task: str) -> tuple[int, np.ndarray]:
    try:
        values = np.array([float(t) for t in tokens], np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise _RowError(f"line {line_no}: non-numeric value '{bad[:20]}'") from None
    if not np.isfinite(values).all():
        raise _RowError(f"line {line_no}: non-finite value (nan/inf)")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        raise _RowError(
            f"line {line_no}: class id {tokens[0]} is not an integer in 0..{nc - 1} (nc={nc} from the YAML)"
        )
    coords = values[1:]
    if len(coords) == 4:
        if task == "segment":
            raise _RowError(
                f"line {line_no}: box-only row (class cx cy w h) in a segment dataset; segment labels need polygons "
                "(convert the boxes to polygons, or train with task=detect)"
            )
        cx, cy, w, h = coords
        coords = np.array(
            [cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2, cy + h / 2]
        )
    if len(coords) % 2:
        raise _RowError(f"line {line_no}: odd number of coordinates ({len(coords)}); each point needs an x and a y")
    if len(coords) < 6:
        raise _RowError(f"line {line_no}: {len(coords) // 2} point(s); a polygon needs at least 3")
    return int(cls), coords.reshape(-1, 2)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_label_text(text: str, nc: int, task: str = "segment") -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Parse label text into (classes (N,) int64, N normalised (K, 2) float32 polygons, repair notes).

    Duplicate rows are dropped and polygons reaching beyond the tolerance are clipped to the unit square (both
    noted). Raises ValueError naming the line for anything that cannot be repaired safely.
    """
    classes, polygons, notes, seen, duplicates = [], [], [], set(), 0
    for line_no, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        cls, pts = _parse_row(tokens, line_no, nc, task)
        key = (cls, pts.tobytes())
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if np.abs(pts).max() > PIXEL_LIKE:
            raise _RowError(
                f"line {line_no}: coordinate {np.abs(pts).max():g} looks like a pixel value; labels must be normalised "
                "to 0-1 (x / image width, y / image height)"
            )
        if pts.min() < -TOLERANCE or pts.max() > 1 + TOLERANCE:
            pts = clip_polygon(pts, 1.0, 1.0)
            notes.append(f"line {line_no}: coordinates outside 0-1 clipped")
            if len(pts) < 3:
                notes.append(f"line {line_no}: nothing left inside the image, row dropped")
                continue
        classes.append(cls)
        polygons.append(pts.astype(np.float32))
    if duplicates:
        notes.append(f"{duplicates} duplicate row(s) removed")
    return np.array(classes, np.int64), polygons, notes


def check_image_and_label(im_file: str | Path, label_file: str | Path, nc: int, task: str = "segment") -> ImageLabels:
    """Verify one image and parse its label file (missing or empty label file = background). Never raises."""
    out = ImageLabels(str(im_file))
    try:
        out.shape, out.orientation, warning = verify_image(im_file)
        if warning:
            out.messages.append(warning)
    except Exception as e:
        out.status, out.messages = STATUS_CORRUPT, [f"image skipped: {e}"]
        return out
    label_file = Path(label_file)
    try:
        text = label_file.read_text(encoding="utf-8") if label_file.is_file() else ""
        out.classes, out.polygons, notes = parse_label_text(text, nc, task)
    except UnicodeDecodeError:
        out.status, out.messages = STATUS_CORRUPT, [f"label file {label_file} skipped: not utf-8 text"]
        return out
    except Exception as e:  # _RowError and anything unexpected
        out.status, out.messages = STATUS_CORRUPT, [f"label file {label_file} skipped: {e}"]
        return out
    out.messages += notes
    if out.messages:
        out.status = STATUS_REPAIRED
    elif len(out.classes) == 0:
        out.status = STATUS_BACKGROUND
    return out
