"""Drawing predictions with OpenCV: a colour palette, translucent instance masks, boxes with labels.

Everything works on (H, W, 3) uint8 BGR numpy images in place and returns the image. Used by `Results.plot` and by
the validator's prediction mosaics.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

_PALETTE_SIZE = 64
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """(64, 3) uint8 BGR colours: hues spread by the golden ratio so neighbouring ids differ clearly."""
    colours = []
    for i in range(_PALETTE_SIZE):
        hue = (0.03 + i * 0.6180339887) % 1.0
        sat = 0.85 if i % 2 == 0 else 0.65
        val = 1.0 if (i // 2) % 2 == 0 else 0.8
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((round(b * 255), round(g * 255), round(r * 255)))
    out = np.array(colours, dtype=np.uint8)
    out.flags.writeable = False
    return out


def color(index: int) -> tuple[int, int, int]:
    """The BGR colour of a class (or instance) id, as a tuple of ints for cv2 calls."""
    b, g, r = palette()[int(index) % _PALETTE_SIZE]
    return int(b), int(g), int(r)


def text_color(background: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a BGR background."""
    b, g, r = (int(c) for c in background[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def default_line_width(shape: Sequence[int]) -> int:
    """Line width scaled to an image of `shape` (h, w, ...): 2 px up to ~660 px images, then growing."""
    return max(round((shape[0] + shape[1]) / 2 * 0.003), 2)


def content_region(frame_shape: Sequence[int], orig_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of an (h0, w0) image letterboxed, centred, into `frame_shape` (H, W) (§5.3)."""
    fh, fw = int(frame_shape[0]), int(frame_shape[1])
    h0, w0 = int(orig_shape[0]), int(orig_shape[1])
    gain = min(fh / h0, fw / w0)
    ch, cw = max(round(h0 * gain), 1), max(round(w0 * gain), 1)
    top, left = round((fh - ch) / 2 - 0.1), round((fw - cw) / 2 - 0.1)
    return top, left, ch, cw


def mask_index_map(masks: np.ndarray, out_shape: Sequence[int] | None = None) -> np.ndarray:
    """Which mask is on top at each pixel: (h, w) uint16, 0 = none, k = masks[k-1] (later masks cover earlier).

    Args:
        masks: (N, h, w) uint8 / bool, 0/1.
        out_shape: (h0, w0) of the image to draw on. When it differs from (h, w) the masks are taken to be
            letterboxed into (h, w) (the network input frame); the content region is cropped and resized with
            nearest neighbour, so no (N, h0, w0) array is ever built.
    """
    n, h, w = masks.shape
    if n == 0:
        shape = (h, w) if out_shape is None else tuple(out_shape[:2])
        return np.zeros(shape, np.uint16)
    masks = masks.view(np.uint8) if masks.dtype == np.bool_ else masks
    top = n - np.argmax(masks[::-1], axis=0).astype(np.uint16)  # last mask covering the pixel, 1-based
    index = np.where(masks.any(0), top, np.uint16(0)).astype(np.uint16)
    if out_shape is not None and (h, w) != tuple(out_shape[:2]):
        t, left, ch, cw = content_region((h, w), out_shape)
        index = cv2.resize(
            np.ascontiguousarray(index[t : t + ch, left : left + cw]),
            (int(out_shape[1]), int(out_shape[0])),
            interpolation=cv2.INTER_NEAREST,
        )
    return index


def draw_masks(img: np.ndarray, masks: np.ndarray, colors: np.ndarray | Sequence, alpha: float = 0.5) -> np.ndarray:
    """Blend translucent masks into `img` (in place) and return it.

    Args:
        img: (h0, w0, 3) uint8 BGR.
        masks: (N, h, w) uint8/bool at the image size, or at the letterboxed network input size (mapped back).
        colors: (N, 3) BGR colour per mask.
        alpha: mask opacity. Where masks overlap, the later one is drawn.
    """
    if len(masks) == 0:
        return img
    index = mask_index_map(np.asarray(masks), img.shape[:2])
    covered = index > 0
    if not covered.any():
        return img
    lut = np.zeros((len(masks) + 1, 3), np.uint8)
    lut[1:] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    overlay = lut[index]  # (h0, w0, 3)
    blended = cv2.addWeighted(img, 1.0 - alpha, overlay, alpha, 0.0)
    np.copyto(img, blended, where=covered[..., None])
    return img


def draw_box_label(
    img: np.ndarray,
    box: Sequence[float],
    label: str = "",
    color: Sequence[int] = (128, 128, 128),
    line_width: int | None = None,
    font_size: float | None = None,
) -> np.ndarray:
    """Draw one xyxy box and, when `label` is set, its label on a filled tab above it (below if no room).

    Args:
        img: (h, w, 3) uint8 BGR, drawn in place.
        box: x1, y1, x2, y2 in image pixels.
        line_width: box thickness (default scaled to the image).
        font_size: cv2 font scale (default line_width / 3).
    """
    lw = line_width or default_line_width(img.shape)
    color = tuple(int(c) for c in color)
    p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
    cv2.rectangle(img, p1, p2, color, thickness=lw, lineType=cv2.LINE_AA)
    if label:
        draw_label(img, p1, label, color, lw, font_size)
    return img


def draw_label(
    img: np.ndarray,
    corner: Sequence[float],
    label: str,
    color: Sequence[int] = (128, 128, 128),
    line_width: int | None = None,
    font_size: float | None = None,
) -> np.ndarray:
    """Draw `label` on a filled tab whose bottom-left is `corner` (x, y) (below it when there is no room above)."""
    lw = line_width or default_line_width(img.shape)
    color = tuple(int(c) for c in color)
    thickness = max(lw - 1, 1)
    scale = font_size if font_size else lw / 3
    (tw, th), _ = cv2.getTextSize(label, _FONT, scale, thickness)
    th += 3
    x, y = int(corner[0]), int(corner[1])
    outside = y >= th  # room above the box
    x = min(x, max(img.shape[1] - tw, 0))  # keep the tab inside the image on the right
    cv2.rectangle(img, (x, y), (x + tw, y - th if outside else y + th), color, -1, cv2.LINE_AA)
    origin = (x, y - 2 if outside else y + th - 1)
    cv2.putText(img, label, origin, _FONT, scale, text_color(color), thickness, cv2.LINE_AA)
    return img


def annotate(
    img: np.ndarray,
    boxes: np.ndarray | None,
    classes: np.ndarray,
    names: dict[int, str] | Sequence[str],
    confs: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    line_width: int | None = None,
    font_size: float | None = None,
    labels: bool = True,
    show_conf: bool = True,
    show_boxes: bool = True,
    color_mode: str = "class",
    alpha: float = 0.5,
) -> np.ndarray:
    """Draw N predictions on `img` (in place): masks first, then boxes and 'name conf' labels.

    Args:
        img: (h0, w0, 3) uint8 BGR.
        boxes: (N, 4) xyxy pixels of `img` (or None).
        classes: (N,) class ids. confs: (N,) scores or None. ids: (N,) track ids or None.
        masks: (N, h, w) 0/1 at img size or at the letterboxed input size.
        color_mode: 'class' (colour by class id) or 'instance' (by index).
    """
    if color_mode not in ("class", "instance"):
        raise ValueError(f"color_mode must be 'class' or 'instance', not {color_mode!r}")
    classes = np.asarray(classes).astype(np.int64).reshape(-1)
    keys = classes if color_mode == "class" else np.arange(len(classes))
    colors = palette()[keys % _PALETTE_SIZE]
    if masks is not None and len(masks):
        draw_masks(img, masks, colors, alpha)
    if boxes is None or not (show_boxes or labels):
        return img
    lw = line_width or default_line_width(img.shape)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    for i in range(len(boxes) - 1, -1, -1):  # highest score drawn last, on top
        text = ""
        if labels:
            name = names[int(classes[i])] if int(classes[i]) in _keys(names) else str(int(classes[i]))
            text = f"id:{int(ids[i])} {name}" if ids is not None else name
            if show_conf and confs is not None:
                text += f" {float(confs[i]):.2f}"
        if show_boxes:
            draw_box_label(img, boxes[i], text, colors[i], lw, font_size)
        elif text:  # label only: a tab at the box's top-left corner without the rectangle
            draw_label(img, boxes[i, :2], text, colors[i], lw, font_size)
    return img


def _keys(names: dict[int, str] | Sequence[str]):
    return names.keys() if isinstance(names, dict) else range(len(names))
