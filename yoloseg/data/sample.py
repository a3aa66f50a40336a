"""Typed containers that flow from files to the loss: one image's instances, a sample, a collated batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Instances:
    """The labelled instances of one image, in the pixel frame of the image they travel with.

    classes: (N,) int64 class ids.
    polygons: N arrays of (K_i, 2) float32 xy pixels (one outline per instance; K_i may differ).
    boxes_xyxy: (N, 4) float32 xyxy pixels (the polygons' extents unless set otherwise).
    """

    classes: np.ndarray
    polygons: list[np.ndarray]
    boxes_xyxy: np.ndarray

    @classmethod
    def empty(cls) -> Instances:
        return cls(np.zeros(0, np.int64), [], np.zeros((0, 4), np.float32))

    def __len__(self) -> int:
        return len(self.classes)

    def select(self, keep: np.ndarray) -> Instances:
        """Instances where boolean/int index `keep` holds."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return Instances(self.classes[idx], [self.polygons[i] for i in idx], self.boxes_xyxy[idx])


@dataclass
class Sample:
    """One image ready for collation.

    image: (3, H, W) uint8 RGB tensor (letterboxed / augmented network input).
    classes: (N,) int64; boxes_xywhn: (N, 4) float32 normalised to the network input.
    masks: (H/r, W/r) index map (uint8/int32, 0 background, k+1 instance k) when overlap, else (N, H/r, W/r) uint8.
    path: source file; orig_shape: (h0, w0); ratio_pad: ((gain_h, gain_w), (pad_left, pad_top)) mapping the
    original image into the network input.
    """

    image: torch.Tensor
    classes: torch.Tensor
    boxes_xywhn: torch.Tensor
    masks: torch.Tensor
    path: str
    orig_shape: tuple[int, int]
    ratio_pad: tuple[tuple[float, float], tuple[float, float]]


@dataclass
class Batch:
    """A collated batch.

    images: (B, 3, H, W) uint8 RGB. batch_idx: (N,) int64 image index of each instance. classes: (N,) int64.
    boxes_xywhn: (N, 4) float32 normalised to the network input. masks: (B, H/r, W/r) index maps when
    `overlap` else (N, H/r, W/r) binary uint8. paths, orig_shapes, ratio_pads: per image.
    """

    images: torch.Tensor
    batch_idx: torch.Tensor
    classes: torch.Tensor
    boxes_xywhn: torch.Tensor
    masks: torch.Tensor
    paths: list[str] = field(default_factory=list)
    orig_shapes: list[tuple[int, int]] = field(default_factory=list)
    ratio_pads: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    overlap: bool = True

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move the tensor fields to `device`."""
        return Batch(
            self.images.to(device, non_blocking=non_blocking),
            self.batch_idx.to(device, non_blocking=non_blocking),
            self.classes.to(device, non_blocking=non_blocking),
            self.boxes_xywhn.to(device, non_blocking=non_blocking),
            self.masks.to(device, non_blocking=non_blocking),
            self.paths,
            self.orig_shapes,
            self.ratio_pads,
            self.overlap,
        )


def collate(samples: list[Sample], overlap: bool = True) -> Batch:
    """Stack samples into a Batch (instances concatenated with their image index)."""
    images = torch.stack([s.image for s in samples])
    batch_idx = torch.cat([torch.full((len(s.classes),), i, dtype=torch.int64) for i, s in enumerate(samples)])
    classes = torch.cat([s.classes.long() for s in samples])
    boxes = torch.cat([s.boxes_xywhn.float() for s in samples]).reshape(-1, 4)
    masks = torch.stack([s.masks for s in samples]) if overlap else torch.cat([s.masks for s in samples])
    return Batch(
        images,
        batch_idx,
        classes,
        boxes,
        masks,
        [s.path for s in samples],
        [s.orig_shape for s in samples],
        [s.ratio_pad for s in samples],
        overlap,
    )
