"""The training augmentation pipeline (§1.11 order) as one object holding only its hyper-parameters.

mosaic -> copy-paste (flip mode) -> random perspective -> copy-paste (mixup mode) -> mixup -> HSV -> channel swap
(bgr) -> flip up-down -> flip left-right. Every random draw comes from the generator passed in, so one seed gives one result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

from ..sample import Instances
from .geometry import flip, random_perspective, with_polygons
from .letterbox import letterbox
from .mix import copy_paste_flip, hsv_jitter, mixup, mosaic4, paste

Loader = Callable[[int], tuple[np.ndarray, Instances]]  # index -> (image with long side imgsz, pixel instances)


@dataclass(frozen=True)
class AugmentHyp:
    """Augmentation hyper-parameters under the incumbent's key names, with its defaults."""

    mosaic: float = 1.0
    mixup: float = 0.0
    copy_paste: float = 0.0
    copy_paste_mode: str = "flip"
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    bgr: float = 0.0

    @classmethod
    def from_dict(cls, hyp: dict | None) -> AugmentHyp:
        """Pick the known keys of a (larger) config dict; others are ignored."""
        names = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in (hyp or {}).items() if k in names and v is not None})
        if out.copy_paste_mode not in ("flip", "mixup"):
            raise ValueError(f"copy_paste_mode must be 'flip' or 'mixup', got {out.copy_paste_mode!r}")
        return out

    def without_mosaic(self) -> AugmentHyp:
        """The close_mosaic variant: mosaic, mixup and copy-paste off."""
        return replace(self, mosaic=0.0, mixup=0.0, copy_paste=0.0)


def letterbox_instances(
    img: np.ndarray, inst: Instances, shape: tuple[int, int], scaleup: bool = True
) -> tuple[np.ndarray, Instances]:
    """Letterbox an image and move its pixel polygons with it."""
    img, (r, _), (left, top) = letterbox(img, shape, scaleup=scaleup)
    shift = np.array([left, top], np.float32)
    return img, with_polygons(inst.classes, [p * np.float32(r) + shift for p in inst.polygons])


class TrainAugment:
    """Builds one augmented (imgsz, imgsz) training image with its instances (or a rect-batch shape when given)."""

    def __init__(self, hyp: AugmentHyp, imgsz: int):
        self.hyp, self.imgsz = hyp, imgsz

    def _geometry(self) -> dict:
        h = self.hyp
        return dict(degrees=h.degrees, translate=h.translate, scale=h.scale, shear=h.shear, perspective=h.perspective)

    def base(self, index: int, n: int, load: Loader, rng: np.random.Generator) -> tuple[np.ndarray, Instances]:
        """Mosaic (or letterbox), copy-paste in flip mode, random perspective: an (imgsz, imgsz) image."""
        s, h = self.imgsz, self.hyp
        if rng.random() < h.mosaic:
            picks = [index, *(int(j) for j in rng.integers(0, n, 3))]
            loaded = [load(j) for j in picks]
            center = (int(rng.uniform(s / 2, 3 * s / 2)), int(rng.uniform(s / 2, 3 * s / 2)))
            img, inst = mosaic4([a for a, _ in loaded], [b for _, b in loaded], s, center)
        else:
            img, inst = letterbox_instances(*load(index), (s, s))
        if h.copy_paste and h.copy_paste_mode == "flip":
            img, inst = copy_paste_flip(img, inst, h.copy_paste, rng)
        return random_perspective(img, inst, rng, (s, s), **self._geometry())

    def __call__(self, index: int, n: int, load: Loader, rng: np.random.Generator) -> tuple[np.ndarray, Instances]:
        h = self.hyp
        img, inst = self.base(index, n, load, rng)
        if h.copy_paste and h.copy_paste_mode == "mixup":
            img2, inst2 = self.base(int(rng.integers(n)), n, load, rng)
            img, inst = paste(img, inst, img2, inst2, h.copy_paste, rng)
        if rng.random() < h.mixup:
            img2, inst2 = self.base(int(rng.integers(n)), n, load, rng)
            img, inst = mixup(img, inst, img2, inst2, rng)
        return self.finish(img, inst, rng)

    def rect(
        self, img: np.ndarray, inst: Instances, shape: tuple[int, int], rng: np.random.Generator
    ) -> tuple[np.ndarray, Instances]:
        """Rect-batch training: letterbox to the batch shape, perspective within it, colour and flips (no mosaic)."""
        img, inst = letterbox_instances(img, inst, shape, scaleup=False)
        img, inst = random_perspective(img, inst, rng, shape, **self._geometry())
        return self.finish(img, inst, rng)

    def finish(self, img: np.ndarray, inst: Instances, rng: np.random.Generator) -> tuple[np.ndarray, Instances]:
        h = self.hyp
        img = hsv_jitter(img, rng, h.hsv_h, h.hsv_s, h.hsv_v)
        if rng.random() < h.bgr:
            img = np.ascontiguousarray(img[..., ::-1])
        if rng.random() < h.flipud:
            img, inst = flip(img, inst, horizontal=False)
        if rng.random() < h.fliplr:
            img, inst = flip(img, inst, horizontal=True)
        return img, inst
