"""Pictures of the data: label statistics (labels.jpg) and batches with their masks (train_batch*.jpg)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from ..utils.files import atomic_path, atomic_write_bytes
from .sample import Batch


def colors(n: int) -> np.ndarray:
    """(n, 3) uint8 BGR colours, distinct for neighbouring ids (golden-angle hues)."""
    hsv = np.stack([(np.arange(n) * 0.618034 % 1.0) * 179, np.full(n, 200), np.full(n, 255)], 1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0] if n else np.zeros((0, 3), np.uint8)


def plot_labels(labels: dict, names: dict[int, str], save_dir: str | Path) -> Path:
    """labels.jpg: instances per class, box centres, box sizes (xywhn), and all boxes drawn centred.

    `labels` is a SegmentDataset or a dict with "classes" (N,) and "boxes_xywhn" (N, 4) (`SegmentDataset.labels`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(labels, dict):
        labels = labels.labels
    cls = np.asarray(labels["classes"], np.int64)
    boxes = np.asarray(labels["boxes_xywhn"], np.float32).reshape(-1, 4)
    nc = max(len(names), int(cls.max()) + 1 if len(cls) else 0)
    fig = Figure(figsize=(9, 9), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots(2, 2).ravel()
    counts = np.bincount(cls, minlength=nc)
    ax[0].bar(range(nc), counts, color=colors(nc)[:, ::-1] / 255)
    ax[0].set_ylabel("instances")
    if nc <= 30:
        ax[0].set_xticks(range(nc), [names.get(i, str(i)) for i in range(nc)], rotation=90, fontsize=8)
    ax[1].hist2d(boxes[:, 0], boxes[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues") if len(boxes) else None
    ax[1].set(xlabel="x", ylabel="y", xlim=(0, 1), ylim=(1, 0))
    ax[2].hist2d(boxes[:, 2], boxes[:, 3], bins=50, range=[[0, 1], [0, 1]], cmap="Blues") if len(boxes) else None
    ax[2].set(xlabel="width", ylabel="height", xlim=(0, 1), ylim=(0, 1))
    canvas = np.full((500, 500, 3), 255, np.uint8)
    palette = colors(nc)
    for c, (_, _, w, h) in zip(cls[:1000], boxes[:1000]):
        p1, p2 = (int(250 - w * 250), int(250 - h * 250)), (int(250 + w * 250), int(250 + h * 250))
        cv2.rectangle(canvas, p1, p2, tuple(int(v) for v in palette[c]), 1)
    ax[3].imshow(canvas[..., ::-1])
    ax[3].axis("off")
    fig.suptitle(f"{len(cls)} instances")
    out = Path(save_dir) / "labels.jpg"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="jpg", dpi=100)
    return out


def _tile(
    image: np.ndarray, masks: np.ndarray, classes: np.ndarray, boxes_xyxy: np.ndarray, names: dict, conf=None
) -> np.ndarray:
    """Draw (n, h, w) binary masks, boxes and names on a BGR image (its own size)."""
    img = image.copy()
    palette = colors(max(len(names), int(classes.max()) + 1 if len(classes) else 1))
    for k in range(len(classes)):
        color = palette[int(classes[k])].astype(np.float32)
        if k < len(masks):
            m = cv2.resize(masks[k].astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
            img[m] = (img[m] * 0.5 + color * 0.5).astype(np.uint8)
    for k in range(len(classes)):
        c = tuple(int(v) for v in palette[int(classes[k])])
        x1, y1, x2, y2 = (int(round(v)) for v in boxes_xyxy[k])
        cv2.rectangle(img, (x1, y1), (x2, y2), c, 1)
        text = names.get(int(classes[k]), str(int(classes[k]))) + (f" {conf[k]:.2f}" if conf is not None else "")
        cv2.putText(img, text, (x1 + 1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, c, 1, cv2.LINE_AA)
    return img


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _pred_arrays(pred: dict, conf_thres: float) -> tuple:
    """(masks, classes, boxes_xyxy, conf) of one image's predictions at or above conf_thres."""
    conf = _numpy(pred["conf"]).astype(np.float32).reshape(-1)
    keep = conf >= conf_thres
    classes = _numpy(pred["cls"] if "cls" in pred else pred["classes"]).astype(np.int64).reshape(-1)[keep]
    boxes = _numpy(pred["boxes"] if "boxes" in pred else pred["boxes_xyxy"]).reshape(-1, 4)[keep]
    masks = _numpy(pred["masks"])[keep] if pred.get("masks") is not None else np.zeros((0, 1, 1), np.uint8)
    return masks, classes, boxes, conf[keep]


def plot_batch(
    batch: Batch,
    names: dict[int, str],
    path: str | Path,
    preds: list[dict] | None = None,
    max_images: int = 16,
    conf_thres: float = 0.25,
) -> Path:
    """Write a grid of up to 16 images of `batch` with their GT masks, boxes and class names (train_batch0.jpg).

    preds: optional per-image dicts {"cls" or "classes" (n,), "boxes" or "boxes_xyxy" (n, 4) xyxy input px,
    "conf" (n,), optional "masks" (n, h, w)} (arrays or tensors) drawn instead of the ground truth
    (e.g. val_batch0_pred.jpg); predictions below `conf_thres` are left out.
    """
    batch = batch.to("cpu")  # a batch on a GPU (train / val with device=0) is drawn from host memory
    n = min(len(batch.images), max_images)
    big_h, big_w = batch.images.shape[2:]
    grid = math.ceil(math.sqrt(n))
    canvas = np.full((grid * big_h, grid * big_w, 3), 255, np.uint8)
    for i in range(n):
        img = batch.images[i].permute(1, 2, 0).numpy()[..., ::-1].copy()
        if preds is not None:
            masks, classes, boxes, conf = _pred_arrays(preds[i], conf_thres)
            tile = _tile(img, masks, classes, boxes, names, conf)
        else:
            sel = (batch.batch_idx == i).numpy()
            if batch.overlap:
                index_map = batch.masks[i].numpy()
                masks = (
                    np.stack([index_map == k + 1 for k in range(int(sel.sum()))]) if sel.any() else np.zeros((0, 1, 1))
                )
            else:
                masks = batch.masks[torch.from_numpy(np.flatnonzero(sel))].numpy()
            xywh = batch.boxes_xywhn[sel].numpy() * np.array([big_w, big_h, big_w, big_h], np.float32)
            xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            tile = _tile(img, masks, batch.classes[sel].numpy(), xyxy, names)
        r, c = divmod(i, grid)
        canvas[r * big_h : (r + 1) * big_h, c * big_w : (c + 1) * big_w] = tile
    scale = min(1.0, 1920 / max(canvas.shape[:2]))
    if scale < 1:
        canvas = cv2.resize(
            canvas, (int(canvas.shape[1] * scale), int(canvas.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    atomic_write_bytes(path, buf.tobytes())
    return Path(path)
