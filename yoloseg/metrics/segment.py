"""Validation metrics objects: Metric (one of box / mask), DetectMetrics and SegmentMetrics (§1.5, §5.8)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from yoloseg.metrics.ap import APResult, ap_per_class


class Metric:
    """AP, precision and recall of one kind of prediction (boxes or masks) over the scored classes.

    Per-class arrays are indexed like `ap_class_index` (the classes present in the ground truth); `maps` spreads
    them over all `nc` classes.
    """

    def __init__(self, nc: int = 0):
        self.nc = nc
        self.p = np.zeros(0)  # (c,) precision per class at the max-mean-F1 confidence
        self.r = np.zeros(0)
        self.f1 = np.zeros(0)
        self.all_ap = np.zeros((0, 10))  # (c, 10) AP at IoU 0.50:0.05:0.95
        self.ap_class_index = np.zeros(0, dtype=int)
        self.p_curve = np.zeros((0, 1000))
        self.r_curve = np.zeros((0, 1000))
        self.f1_curve = np.zeros((0, 1000))
        self.px = np.linspace(0, 1, 1000)
        self.prec_values = np.zeros((1, 1000))

    @property
    def ap50(self) -> np.ndarray:
        """(c,) AP at IoU 0.5 per class."""
        return self.all_ap[:, 0] if len(self.all_ap) else np.zeros(0)

    @property
    def ap(self) -> np.ndarray:
        """(c,) AP at IoU 0.5:0.95 per class."""
        return self.all_ap.mean(1) if len(self.all_ap) else np.zeros(0)

    @property
    def mp(self) -> float:
        return float(self.p.mean()) if len(self.p) else 0.0

    @property
    def mr(self) -> float:
        return float(self.r.mean()) if len(self.r) else 0.0

    @property
    def map50(self) -> float:
        return float(self.all_ap[:, 0].mean()) if len(self.all_ap) else 0.0

    @property
    def map75(self) -> float:
        return float(self.all_ap[:, 5].mean()) if len(self.all_ap) else 0.0

    @property
    def map(self) -> float:
        return float(self.all_ap.mean()) if len(self.all_ap) else 0.0

    def mean_results(self) -> list[float]:
        """[mp, mr, map50, map]."""
        return [self.mp, self.mr, self.map50, self.map]

    def class_result(self, i: int) -> tuple[float, float, float, float]:
        """(p, r, ap50, ap) of the i-th scored class."""
        return float(self.p[i]), float(self.r[i]), float(self.ap50[i]), float(self.ap[i])

    @property
    def maps(self) -> np.ndarray:
        """(nc,) mAP50-95 per class; classes without ground truth get the overall map."""
        maps = np.full(self.nc, self.map)
        for i, c in enumerate(self.ap_class_index):
            if 0 <= c < self.nc:
                maps[c] = self.ap[i]
        return maps

    def fitness(self) -> float:
        """mAP50-95 (the 8.4 definition)."""
        return self.map

    def update(self, results: APResult | tuple) -> None:
        """Take ap_per_class output, or the 10-tuple (p, r, f1, all_ap, ap_class_index, p_curve, r_curve,
        f1_curve, px, prec_values)."""
        if isinstance(results, APResult):
            results = results[2:]
        (self.p, self.r, self.f1, self.all_ap, self.ap_class_index) = results[:5]
        (self.p_curve, self.r_curve, self.f1_curve, self.px, self.prec_values) = results[5:10]

    @property
    def curves(self) -> list[str]:
        return []

    @property
    def curves_results(self) -> list[list[Any]]:
        return [
            [self.px, self.prec_values, "Recall", "Precision"],
            [self.px, self.f1_curve, "Confidence", "F1"],
            [self.px, self.p_curve, "Confidence", "Precision"],
            [self.px, self.r_curve, "Confidence", "Recall"],
        ]


class DetectMetrics:
    """Box metrics of a validation run: `process` once with the statistics of all images."""

    task = "detect"

    def __init__(self, names: dict[int, str] | None = None, save_dir: str | Path | None = None, plot: bool = False):
        self.names = dict(names or {})
        self.save_dir = Path(save_dir) if save_dir is not None else None
        self.plot = plot
        self.box = Metric(len(self.names))
        self.speed = {"preprocess": 0.0, "inference": 0.0, "loss": 0.0, "postprocess": 0.0}  # ms per image
        self.confusion_matrix = None  # set by the validator
        self.nt_per_class = np.zeros(len(self.names), dtype=int)  # ground-truth instances per class
        self.nt_per_image = np.zeros(len(self.names), dtype=int)  # images containing each class

    def _parts(self) -> list[tuple[str, str, Metric]]:
        """(key suffix, curve / summary prefix, metric) of every kind of prediction."""
        return [("B", "Box", self.box)]

    def _score(self, metric: Metric, prefix: str, tp: np.ndarray, conf, pred_cls, target_cls) -> None:
        plot = self.plot and self.save_dir is not None
        metric.update(ap_per_class(tp, conf, pred_cls, target_cls, plot, self.save_dir, self.names, prefix))

    def _count_targets(self, target_cls: np.ndarray, target_img: np.ndarray | None) -> None:
        target_cls = np.asarray(target_cls, dtype=int)
        nc = max(len(self.names), int(target_cls.max()) + 1 if target_cls.size else 0)
        self.nt_per_class = np.bincount(target_cls, minlength=nc)
        if target_img is not None and target_cls.size:
            pairs = np.unique(np.stack([np.asarray(target_img, dtype=int), target_cls]), axis=1)
            self.nt_per_image = np.bincount(pairs[1], minlength=nc)
        else:
            self.nt_per_image = np.zeros(nc, dtype=int)

    def process(
        self,
        tp: np.ndarray,
        conf: np.ndarray,
        pred_cls: np.ndarray,
        target_cls: np.ndarray,
        target_img: np.ndarray | None = None,
    ) -> None:
        """Compute the metrics from detections (tp (N, 10), conf (N,), pred_cls (N,)) and ground truth
        (target_cls (M,), optional target_img (M,) image index, for the per-class image counts)."""
        self._count_targets(target_cls, target_img)
        self._score(self.box, "Box", tp, conf, pred_cls, target_cls)

    @property
    def keys(self) -> list[str]:
        names = ("precision", "recall", "mAP50", "mAP50-95")
        return [f"metrics/{name}({suffix})" for suffix, _, _ in self._parts() for name in names]

    def mean_results(self) -> list[float]:
        return [value for _, _, metric in self._parts() for value in metric.mean_results()]

    def class_result(self, i: int) -> tuple[float, ...]:
        return tuple(value for _, _, metric in self._parts() for value in metric.class_result(i))

    @property
    def maps(self) -> np.ndarray:
        return sum(metric.maps for _, _, metric in self._parts())

    @property
    def fitness(self) -> float:
        return float(sum(metric.fitness() for _, _, metric in self._parts()))

    @property
    def results_dict(self) -> dict[str, float]:
        return dict(zip([*self.keys, "fitness"], [*self.mean_results(), self.fitness]))

    @property
    def ap_class_index(self) -> np.ndarray:
        return self.box.ap_class_index

    @property
    def curves(self) -> list[str]:
        kinds = ("Precision-Recall", "F1-Confidence", "Precision-Confidence", "Recall-Confidence")
        return [f"{kind}({suffix})" for suffix, _, _ in self._parts() for kind in kinds]

    @property
    def curves_results(self) -> list[list[Any]]:
        return [curve for _, _, metric in self._parts() for curve in metric.curves_results]

    def _class_row(self, i: int, c: int, decimals: int) -> dict[str, Any]:
        row: dict[str, Any] = {
            "Class": self.names.get(int(c), str(int(c))),
            "Images": int(self.nt_per_image[c]) if c < len(self.nt_per_image) else 0,
            "Instances": int(self.nt_per_class[c]) if c < len(self.nt_per_class) else 0,
        }
        for _, prefix, metric in self._parts():
            values = {"P": metric.p[i], "R": metric.r[i], "F1": metric.f1[i]}
            row.update({f"{prefix}-{k}": round(float(v), decimals) for k, v in values.items()})
            aps = {"mAP50": metric.all_ap[i, 0], "mAP75": metric.all_ap[i, 5], "mAP50-95": metric.ap[i]}
            head = "" if prefix == "Box" else f"{prefix}-"  # box APs keep the incumbent's bare column names
            row.update({f"{head}{k}": round(float(v), decimals) for k, v in aps.items()})
        return row

    def summary(self, normalize: bool = True, decimals: int = 5) -> list[dict[str, Any]]:
        """One row per scored class: Class, Images, Instances, Box-P/R/F1, mAP50/mAP75/mAP50-95 (box), and for
        segmentation Mask-P/R/F1, Mask-mAP50/75/50-95. `normalize` is accepted for API compatibility."""
        return [self._class_row(i, int(c), decimals) for i, c in enumerate(self.ap_class_index)]

    def to_json(self, normalize: bool = True, decimals: int = 5) -> str:
        return json.dumps(self.summary(normalize, decimals), indent=2)

    def to_csv(self, normalize: bool = True, decimals: int = 5) -> str:
        rows = self.summary(normalize, decimals)
        if not rows:
            return ""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


class SegmentMetrics(DetectMetrics):
    """Box and mask metrics of a segmentation validation run (`.box`, `.seg`); fitness = box mAP + mask mAP."""

    task = "segment"

    def __init__(self, names: dict[int, str] | None = None, save_dir: str | Path | None = None, plot: bool = False):
        super().__init__(names, save_dir, plot)
        self.seg = Metric(len(self.names))

    def _parts(self) -> list[tuple[str, str, Metric]]:
        return [("B", "Box", self.box), ("M", "Mask", self.seg)]

    def process(
        self,
        tp_box: np.ndarray,
        tp_mask: np.ndarray,
        conf: np.ndarray,
        pred_cls: np.ndarray,
        target_cls: np.ndarray,
        target_img: np.ndarray | None = None,
    ) -> None:
        """Compute box and mask metrics; tp_box, tp_mask (N, 10) true-positive flags of the same detections."""
        self._count_targets(target_cls, target_img)
        self._score(self.box, "Box", tp_box, conf, pred_cls, target_cls)
        self._score(self.seg, "Mask", tp_mask, conf, pred_cls, target_cls)
