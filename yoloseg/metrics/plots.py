"""Metric plots (PR / F1 / P / R curves, confusion matrix), drawn on Agg figures and written atomically.

matplotlib.figure.Figure with its own Agg canvas is used instead of pyplot: no global backend or state changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yoloseg.utils.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_MAX_LEGEND_CLASSES = 20  # per-class lines get a legend entry only below this many classes
_DPI = 250


def _figure(size: tuple[float, float] = (9, 6)) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, tight_layout=True)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=_DPI)
    return path


def plot_pr_curve(
    px: np.ndarray, py: np.ndarray, ap: np.ndarray, save_path: str | Path, names: dict[int, str] | None = None
) -> Path:
    """Precision-recall curves.

    Args:
        px: (1000,) recall grid.
        py: (c, 1000) precision per scored class.
        ap: (c, T) AP per class and IoU threshold (column 0: IoU 0.5).
        save_path: output image, e.g. BoxPR_curve.png.
        names: row index -> class name.
    """
    names = names or {}
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    per_class = 0 < len(py) < _MAX_LEGEND_CLASSES
    for i, y in enumerate(py):
        label = f"{names.get(i, i)} {ap[i, 0]:.3f}" if per_class and len(ap) > i else None
        ax.plot(px, y, linewidth=1, label=label, color="grey" if not per_class else None)
    mean_ap = float(ap[:, 0].mean()) if len(ap) else 0.0
    ax.plot(px, py.mean(0), linewidth=3, color="blue", label=f"all classes {mean_ap:.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-Recall Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return _save(fig, save_path)


def plot_mc_curve(
    px: np.ndarray,
    py: np.ndarray,
    save_path: str | Path,
    names: dict[int, str] | None = None,
    xlabel: str = "Confidence",
    ylabel: str = "Metric",
) -> Path:
    """Metric-confidence curves (F1, precision or recall against confidence), with the smoothed class mean.

    Args:
        px: (1000,) confidence grid.
        py: (c, 1000) metric per scored class.
        save_path: output image, e.g. MaskF1_curve.png.
    """
    from yoloseg.metrics.ap import smooth

    names = names or {}
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    per_class = 0 < len(py) < _MAX_LEGEND_CLASSES
    for i, y in enumerate(py):
        ax.plot(
            px, y, linewidth=1, label=str(names.get(i, i)) if per_class else None, color=None if per_class else "grey"
        )
    mean = smooth(py.mean(0), 0.1) if len(py) else np.zeros_like(px)
    best = int(mean.argmax())
    ax.plot(px, mean, linewidth=3, color="blue", label=f"all classes {mean[best]:.2f} at {px[best]:.3f}")
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel}-{xlabel} Curve")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    return _save(fig, save_path)


def plot_confusion_matrix(
    matrix: np.ndarray, save_path: str | Path, names: list[str], normalize: bool = True, title: str = "Confusion Matrix"
) -> Path:
    """Heat map of a (nc + 1, nc + 1) confusion matrix, rows = predicted, columns = true ('background' last).

    Args:
        normalize: divide each column by its sum (the share of each true class predicted as each class).
    """
    array = matrix / (matrix.sum(0, keepdims=True) + 1e-9) if normalize else matrix.astype(float)
    array = np.where(array < 0.005, np.nan, array)  # leave near-zero cells blank
    labels = [*names, "background"]
    n = len(labels)
    fig = _figure((max(6.0, 0.35 * n + 3), max(5.0, 0.3 * n + 2.5)))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(array, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for (i, j), value in np.ndenumerate(array):
            if not np.isnan(value):
                text = f"{value:.2f}" if normalize else f"{int(value)}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 * np.nanmax(array) else "black",
                )
    ax.set(xlabel="True", ylabel="Predicted", title=f"{title}{' Normalized' if normalize else ''}")
    return _save(fig, save_path)
