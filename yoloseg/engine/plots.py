"""Training curves: results.png from results.csv (matplotlib's object API; no global pyplot state)."""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils.files import atomic_path


def plot_results(csv_file: Path) -> Path | None:
    """Plot every column of results.csv against the epoch into results.png beside it."""
    csv_file = Path(csv_file)
    with open(csv_file, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    keys = [k for k in rows[0] if k not in ("epoch", "time")]
    epochs = [float(r["epoch"]) for r in rows]
    cols = 5
    nrows = (len(keys) + cols - 1) // cols
    fig = Figure(figsize=(3 * cols, 2.6 * nrows), tight_layout=True)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, cols, i + 1)
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".", linewidth=1.5, markersize=6)
        ax.set_title(key, fontsize=10)
    out = csv_file.with_name("results.png")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return out
