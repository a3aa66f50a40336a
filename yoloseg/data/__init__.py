"""yoloseg.data: dataset YAMLs, label checking and caching, augmentation, the dataset and its loader.

Names are imported lazily (nothing heavy happens at `import yoloseg.data`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DatasetError": ".errors",
    "check_dataset": ".dataset_yaml",
    "SegmentDataset": ".dataset",
    "build_dataloader": ".loader",
    "letterbox": ".augment.letterbox",
    "convert_coco": ".convert",
    "generate_shapes": ".synthetic",
    "plot_labels": ".plots",
    "plot_batch": ".plots",
    "Batch": ".sample",
    "Sample": ".sample",
    "Instances": ".sample",
    "collate": ".sample",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
