"""yoloseg: YOLO11 instance segmentation, from scratch, Apache-2.0. Public API: YOLO, Results, __version__."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["YOLO", "Results", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import yoloseg` stays cheap and does no work (torch is imported on first use).
    if name == "YOLO":
        from .model import YOLO

        return YOLO
    if name == "Results":
        from .results import Results

        return Results
    raise AttributeError(f"module 'yoloseg' has no attribute '{name}'")
