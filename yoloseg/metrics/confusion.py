"""Confusion matrix of detections against ground truth, with a background row and column."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoloseg.ops.boxes import box_iou


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _labels(names: Mapping[int, str] | Sequence[str] | None, nc: int) -> list[str]:
    """Class names as a list, from a list or an id -> name dict (missing ids by number)."""
    if names is None:
        return [str(i) for i in range(nc)]
    if isinstance(names, Mapping):
        return [str(names.get(i, i)) for i in range(nc)]
    return [str(n) for n in names]


def _one_to_one(iou: np.ndarray, iou_thres: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (gt, det) with IoU > iou_thres, each detection and each ground truth used once, highest IoU first."""
    gi, di = np.nonzero(iou > iou_thres)
    if gi.size == 0:
        return gi, di
    order = np.argsort(-iou[gi, di], kind="stable")
    gi, di = gi[order], di[order]
    _, first = np.unique(di, return_index=True)  # best ground truth of each detection
    keep = np.sort(first)  # back to descending IoU
    gi, di = gi[keep], di[keep]
    _, first = np.unique(gi, return_index=True)  # then best detection of each ground truth
    return gi[first], di[first]


class ConfusionMatrix:
    """(nc + 1) x (nc + 1) counts: rows = predicted class, columns = true class, index nc = background.

    A detection above `conf` and a ground truth are paired one-to-one by IoU > iou_thres (class-agnostic, highest
    IoU first). Paired: [pred, true] += 1; unpaired ground truth: [background, true]; unpaired detection:
    [pred, background]. Any IoU can be used (pass mask IoU for segmentation).
    """

    def __init__(
        self,
        nc: int,
        conf: float = 0.25,
        iou_thres: float = 0.45,
        names: Mapping[int, str] | Sequence[str] | None = None,
    ):
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres
        self.names = _labels(names, nc)
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process_batch(
        self,
        detections: torch.Tensor | np.ndarray | None,
        gt_boxes: torch.Tensor | np.ndarray | None,
        gt_cls: torch.Tensor | np.ndarray,
        ious: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add one image.

        Args:
            detections: (n, 6+) x1, y1, x2, y2, conf, cls, ... (None or empty: none).
            gt_boxes: (m, 4) xyxy, in the detections' coordinates (unused when `ious` is given).
            gt_cls: (m,) ground-truth classes.
            ious: optional (m, n) IoU of every ground truth with every detection (e.g. mask IoU).
        """
        gt_cls = _to_numpy(gt_cls).astype(int).reshape(-1)
        dets = np.zeros((0, 6), dtype=np.float32) if detections is None else _to_numpy(detections)
        dets = dets if dets.size else np.zeros((0, 6), dtype=np.float32)
        above = dets[:, 4] > self.conf
        det_cls = dets[above, 5].astype(int)
        if gt_cls.size and det_cls.size:
            if ious is None:
                iou = _to_numpy(box_iou(torch.as_tensor(gt_boxes), torch.as_tensor(dets[above, :4])))
            else:
                iou = _to_numpy(ious)[:, above]
            gi, di = _one_to_one(iou, self.iou_thres)
        else:
            gi = di = np.zeros(0, dtype=int)
        np.add.at(self.matrix, (det_cls[di], gt_cls[gi]), 1)
        missed = np.ones(gt_cls.size, dtype=bool)
        missed[gi] = False
        np.add.at(self.matrix, (self.nc, gt_cls[missed]), 1)
        extra = np.ones(det_cls.size, dtype=bool)
        extra[di] = False
        np.add.at(self.matrix, (det_cls[extra], self.nc), 1)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """(nc,) true positives (diagonal) and false positives (rest of each predicted row) per class."""
        tp = np.diag(self.matrix)
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def normalized(self) -> np.ndarray:
        """Each true-class column divided by its total."""
        return self.matrix / (self.matrix.sum(0, keepdims=True) + 1e-9)

    def plot(
        self,
        normalize: bool = True,
        save_dir: str | Path = "",
        names: Mapping[int, str] | Sequence[str] | None = None,
    ) -> Path:
        """Save confusion_matrix.png or confusion_matrix_normalized.png in save_dir."""
        from yoloseg.metrics.plots import plot_confusion_matrix

        name = "confusion_matrix_normalized.png" if normalize else "confusion_matrix.png"
        labels = _labels(names, self.nc) if names is not None else self.names
        return plot_confusion_matrix(self.matrix, Path(save_dir) / name, labels, normalize)

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One row per predicted class (then background): {"Predicted": name, <true name>: value, ...}."""
        labels = [*self.names, "background"]
        array = self.normalized() if normalize else self.matrix
        rows = []
        for i, label in enumerate(labels):
            values = [round(float(v), decimals) if normalize else int(v) for v in array[i]]
            rows.append({"Predicted": label, **dict(zip(labels, values))})
        return rows

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        return json.dumps(self.summary(normalize, decimals), indent=2)

    def to_csv(self, normalize: bool = False, decimals: int = 5) -> str:
        rows = self.summary(normalize, decimals)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
