"""Matching predictions to ground truth and average precision (§5.8)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # float32, the COCO thresholds .50:.05:.95


def mask_iou(gt: torch.Tensor, pred: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU (M, N) of flattened binary masks gt (M, H*W) and pred (N, H*W): inter / (sum gt + sum pred - inter + eps)."""
    gt, pred = gt.float(), pred.float()
    inter = gt @ pred.T
    return inter / (gt.sum(1)[:, None] + pred.sum(1)[None, :] - inter + eps)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def match_predictions(
    pred_classes: torch.Tensor | np.ndarray,
    true_classes: torch.Tensor | np.ndarray,
    iou: torch.Tensor | np.ndarray,
    iouv: torch.Tensor | np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """Greedy one-to-one matching of one image's detections to its ground truth, per IoU threshold.

    Detections are visited in the given order (descending confidence). For each threshold independently a detection
    takes the unclaimed ground truth of its class with the highest IoU (the first on ties); it is a true positive,
    and claims it, iff that IoU >= the threshold.

    Args:
        pred_classes: (N,) detection classes.
        true_classes: (M,) ground-truth classes.
        iou: (M, N) IoU of every ground truth with every detection.
        iouv: (T,) IoU thresholds.
    Returns:
        (N, T) bool true-positive flags.
    """
    thresholds = _to_numpy(iouv).astype(np.float32)
    pred_classes, true_classes = _to_numpy(pred_classes), _to_numpy(true_classes)
    correct = np.zeros((len(pred_classes), len(thresholds)), dtype=bool)
    if correct.size == 0 or len(true_classes) == 0:
        return correct
    iou = _to_numpy(iou).astype(np.float32) * (true_classes[:, None] == pred_classes[None, :])
    claimed = np.zeros((len(true_classes), len(thresholds)), dtype=bool)
    columns = np.arange(len(thresholds))
    for n in np.flatnonzero(iou.max(0) >= thresholds.min()):  # the others can match nothing
        candidates = np.where(claimed, np.float32(-1), iou[:, n, None])  # (M, T)
        best = candidates.argmax(0)
        hit = candidates[best, columns] >= thresholds
        correct[n] = hit
        claimed[best[hit], columns[hit]] = True
    return correct


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Area under one precision-recall curve.

    The curve gets the sentinels recall [0, ..., r_last, 1] / precision [1, ..., 0, 0] (precision falls to 0 right
    after the last recall), its precision envelope (running max from the right), and the trapezoid rule over 101
    recall points of its linear interpolation.

    Args:
        recall, precision: (n,) cumulative values in descending-confidence order.
    Returns:
        ap, mpre (n + 3,) envelope precision, mrec (n + 3,) recall with sentinels.
    """
    mrec = np.concatenate(([0.0], recall, [recall[-1], 1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0, 0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trapezoid(np.interp(x, mrec, mpre), x)), mpre, mrec


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter of width round(len(y) * f * 2) // 2 + 1 (odd), padded with the edge values, same length as y."""
    nf = round(len(y) * f * 2) // 2 + 1
    pad = np.ones(nf // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(padded, np.ones(nf) / nf, mode="valid")


class APResult(NamedTuple):
    """Output of ap_per_class; c = classes present in the ground truth (the scored classes)."""

    tp: np.ndarray  # (c,) true positives at the chosen confidence, from recall * n_gt
    fp: np.ndarray  # (c,)
    p: np.ndarray  # (c,) precision at the max-mean-F1 confidence
    r: np.ndarray  # (c,) recall there
    f1: np.ndarray  # (c,)
    ap: np.ndarray  # (c, T) AP per IoU threshold
    unique_classes: np.ndarray  # (c,) int class ids
    p_curve: np.ndarray  # (c, 1000) precision over the confidence grid px
    r_curve: np.ndarray  # (c, 1000)
    f1_curve: np.ndarray  # (c, 1000)
    px: np.ndarray  # (1000,) confidence / recall grid linspace(0, 1, 1000)
    prec_values: np.ndarray  # (c, 1000) envelope precision at IoU 0.5 over recall px (zeros (1, 1000) if none)


def ap_per_class(
    tp: np.ndarray,
    conf: np.ndarray,
    pred_cls: np.ndarray,
    target_cls: np.ndarray,
    plot: bool = False,
    save_dir: str | Path | None = None,
    names: dict[int, str] | None = None,
    prefix: str = "Box",
    eps: float = 1e-16,
) -> APResult:
    """Per-class AP at every IoU threshold, and P / R / F1 at the confidence that maximises the mean F1.

    Args:
        tp: (N, T) true-positive flags of all detections of all images.
        conf: (N,) confidences.
        pred_cls: (N,) detection classes.
        target_cls: (M,) classes of all ground-truth instances.
        plot: save {prefix}PR_curve.png, {prefix}F1_curve.png, {prefix}P_curve.png, {prefix}R_curve.png in save_dir.
        names: class id -> name, for the plot legends.
    Returns:
        APResult. Only classes present in target_cls are scored; detections of other classes are ignored.
    """
    tp, conf, pred_cls = np.asarray(tp, dtype=float), np.asarray(conf), np.asarray(pred_cls)
    tp = tp if tp.ndim == 2 else tp.reshape(-1, len(IOU_THRESHOLDS))
    order = np.argsort(-conf)  # NumPy's default (unstable) sort, as the reference
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    unique_classes, n_targets = np.unique(np.asarray(target_cls), return_counts=True)
    nc, n_thr = len(unique_classes), tp.shape[1]
    px = np.linspace(0, 1, 1000)
    ap, p_curve, r_curve = np.zeros((nc, n_thr)), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    prec_values = []
    for ci, c in enumerate(unique_classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (1 - tp[mine]).cumsum(0)
        recall = tpc / (n_targets[ci] + eps)
        precision = tpc / (tpc + fpc)
        r_curve[ci] = np.interp(-px, -conf[mine], recall[:, 0], left=0)  # conf decreases: interpolate on -conf
        p_curve[ci] = np.interp(-px, -conf[mine], precision[:, 0], left=1)
        for j in range(n_thr):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                prec_values.append(np.interp(px, mrec, mpre))
    prec = np.array(prec_values) if prec_values else np.zeros((1, 1000))
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    if plot and save_dir is not None:
        _plot_curves(Path(save_dir), prefix, px, prec, ap, p_curve, r_curve, f1_curve, unique_classes, names or {})
    i = int(smooth(f1_curve.mean(0), 0.1).argmax()) if nc else 0
    p, r, f1 = p_curve[:, i], r_curve[:, i], f1_curve[:, i]
    tp_i = (r * n_targets).round()
    fp_i = (tp_i / (p + eps) - tp_i).round()
    return APResult(tp_i, fp_i, p, r, f1, ap, unique_classes.astype(int), p_curve, r_curve, f1_curve, px, prec)


def _plot_curves(
    save_dir: Path,
    prefix: str,
    px: np.ndarray,
    prec: np.ndarray,
    ap: np.ndarray,
    p_curve: np.ndarray,
    r_curve: np.ndarray,
    f1_curve: np.ndarray,
    classes: np.ndarray,
    names: dict[int, str],
) -> None:
    from yoloseg.metrics.plots import plot_mc_curve, plot_pr_curve

    labels = {i: names.get(int(c), str(int(c))) for i, c in enumerate(classes)}
    plot_pr_curve(px, prec, ap, save_dir / f"{prefix}PR_curve.png", labels)
    plot_mc_curve(px, f1_curve, save_dir / f"{prefix}F1_curve.png", labels, ylabel="F1")
    plot_mc_curve(px, p_curve, save_dir / f"{prefix}P_curve.png", labels, ylabel="Precision")
    plot_mc_curve(px, r_curve, save_dir / f"{prefix}R_curve.png", labels, ylabel="Recall")
