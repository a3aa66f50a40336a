"""Augmentation kernels (pure functions of image + instances + drawn parameters) and the training pipeline."""

from __future__ import annotations

from .letterbox import letterbox, letterbox_params, resize_long_side
from .masks import instance_masks, overlap_mask
from .pipeline import AugmentHyp, TrainAugment

__all__ = [
    "AugmentHyp",
    "TrainAugment",
    "instance_masks",
    "letterbox",
    "letterbox_params",
    "overlap_mask",
    "resize_long_side",
]
