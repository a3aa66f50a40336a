"""The instance-segmentation dataset: checked labels, optional image cache, rect batches, train / val transforms."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..utils.files import atomic_path
from ..utils.log import log
from ..utils.torch_utils import usable_cpus
from .augment.geometry import with_polygons
from .augment.letterbox import letterbox, long_side_shape, resize_long_side
from .augment.masks import instance_masks, overlap_mask
from .augment.pipeline import AugmentHyp, TrainAugment
from .images import imread, list_images
from .label_cache import LabelStore, load_labels, user_cache_dir
from .polygons import resample_count, resample_polygon
from .sample import Instances, Sample

# cache="auto" (the training default) keeps the decoded, resized images in RAM when all of them take at most this
# many bytes and AUTO_CACHE_MEMORY_SHARE of the available memory (split between the processes of one node). Mosaic
# reads each image ~4 times per epoch: on 2 cores, decoding was ~30% of the loader's time on shapes-ref-seg at 256.
AUTO_CACHE_MAX_BYTES = 1 << 30
AUTO_CACHE_MEMORY_SHARE = 0.1


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux MemAvailable); 0 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def resized_bytes(shapes_hw: np.ndarray, imgsz: int) -> int:
    """Bytes of the (h, w, 3) uint8 images of original sizes (N, 2) once their long side is resized to imgsz."""
    return sum(3 * h * w for h, w in (long_side_shape(int(h0), int(w0), imgsz) for h0, w0 in shapes_hw))


def auto_cache_fits(nbytes: int) -> bool:
    """Whether cache="auto" keeps `nbytes` of images in RAM (see AUTO_CACHE_MAX_BYTES)."""
    local_procs = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)
    budget = min(AUTO_CACHE_MAX_BYTES, int(available_memory() * AUTO_CACHE_MEMORY_SHARE)) // local_procs
    return 0 < nbytes <= budget


def rect_batches(
    shapes_hw: np.ndarray, batch_size: int, imgsz: int, stride: int, pad: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aspect-ratio sorted batches (§5.2): (order (N,) from NumPy's default argsort of h/w, batch index (N,),
    batch shapes (nb, 2) hw multiples of stride)."""
    n = len(shapes_hw)
    batch = np.floor(np.arange(n) / batch_size).astype(int)
    nb = int(batch[-1]) + 1 if n else 0
    ar = shapes_hw[:, 0] / shapes_hw[:, 1]
    order = ar.argsort()
    ar = ar[order]
    shapes = [[1, 1]] * nb
    for i in range(nb):
        ari = ar[batch == i]
        lo, hi = ari.min(), ari.max()
        if hi < 1:
            shapes[i] = [hi, 1]
        elif lo > 1:
            shapes[i] = [1, 1 / lo]
    batch_shapes = (
        np.ceil(np.array(shapes, dtype=np.float64).reshape(-1, 2) * imgsz / stride + pad).astype(int) * stride
    )
    return order, batch, batch_shapes


class SegmentDataset(torch.utils.data.Dataset):
    """Images with polygon labels -> `Sample`s (letterboxed uint8 image, classes, boxes, masks at 1/mask_ratio).

    Validation (augment=False) reproduces the reference preprocessing exactly (§5.1, §5.2, §5.8, §5.9).
    Training draws every random choice from a generator seeded by (seed, epoch, index).
    """

    def __init__(
        self,
        img_files: list[str | Path] | str | Path,
        imgsz: int = 640,
        augment: bool = False,
        hyp: dict | None = None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        pad: float = 0.0,
        cache: str | bool = False,
        single_cls: bool = False,
        classes: list[int] | None = None,
        fraction: float = 1.0,
        mask_ratio: int = 4,
        overlap_mask: bool = True,
        seed: int = 0,
        nc: int = 80,
        task: str = "segment",
        prefix: str = "",
    ):
        files = list_images(img_files)
        if fraction < 1.0:
            files = files[: round(len(files) * fraction)]
        store = load_labels(files, nc, task, prefix)
        if classes is not None:
            store = store.select(np.arange(len(store)), np.isin(store.classes, np.asarray(classes)))
        if single_cls:
            store.classes = np.zeros_like(store.classes)
        self.imgsz, self.augment, self.rect, self.stride, self.pad = imgsz, augment, rect, stride, pad
        self.mask_ratio, self.overlap_mask, self.seed, self.epoch = mask_ratio, overlap_mask, seed, 0
        self.hyp = AugmentHyp.from_dict(hyp) if augment else AugmentHyp()
        self.batch, self.batch_shapes = None, None
        if rect:
            order, self.batch, self.batch_shapes = rect_batches(store.shapes, batch_size, imgsz, stride, pad)
            store = store.select(order)
        self.store: LabelStore = store
        self.im_files = store.im_files
        self.transform = TrainAugment(self.hyp, imgsz)
        self._images: list[np.ndarray] | None = None
        self._cache_mode = "ram" if cache is True else (cache or None)
        self._auto_cache = self._cache_mode == "auto"
        if self._auto_cache:
            self._cache_mode = "ram" if auto_cache_fits(resized_bytes(store.shapes, imgsz)) else None
        if self._cache_mode in ("ram", "disk"):
            self._fill_cache()

    def __len__(self) -> int:
        return len(self.store)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws __getitem__ makes (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def close_mosaic(self) -> None:
        """Turn mosaic, mixup and copy-paste off (the last `close_mosaic` epochs)."""
        self.hyp = self.hyp.without_mosaic()
        self.transform = TrainAugment(self.hyp, self.imgsz)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), self.epoch, int(index)])

    @property
    def labels(self) -> dict:
        """Counts (images, instances, backgrounds, corrupt, repaired) and every instance's class and box (xywhn of
        its original image), e.g. for plot_labels."""
        r = self.store.report
        s = self.store
        counts = {k: r[k] for k in ("corrupt", "repaired", "missing_labels")}
        boxes = np.zeros((len(s.classes), 4), np.float32)
        if len(s.classes):
            starts = s.pt_offsets[:-1]
            lo = np.stack([np.minimum.reduceat(s.points[:, k], starts) for k in (0, 1)], 1)
            hi = np.stack([np.maximum.reduceat(s.points[:, k], starts) for k in (0, 1)], 1)
            boxes = np.concatenate([(lo + hi) / 2, hi - lo], 1).astype(np.float32)
        n_inst = s.instance_counts()
        return {
            "images": len(s),
            "instances": int(n_inst.sum()),
            "backgrounds": int((n_inst == 0).sum()),
            **counts,
            "classes": s.classes.copy(),
            "boxes_xywhn": boxes,
        }

    # ---- image loading ------------------------------------------------------------------------------------------
    def _disk_cache_file(self, i: int) -> Path:
        f = self.im_files[i]
        st = os.stat(f)
        key = hashlib.sha256(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{self.imgsz}".encode()).hexdigest()[:24]
        return user_cache_dir() / "images" / f"{key}.npy"

    def _read_resized(self, i: int) -> np.ndarray:
        if self._cache_mode == "disk":
            f = self._disk_cache_file(i)
            if f.is_file():
                try:
                    return np.load(f, allow_pickle=False)
                except Exception:
                    pass  # unreadable cache entry: decode the image again
        img = resize_long_side(imread(self.im_files[i], int(self.store.orientations[i])), self.imgsz)
        if self._cache_mode == "disk":
            try:
                with atomic_path(self._disk_cache_file(i)) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, img, allow_pickle=False)
            except OSError:
                pass
        return img

    def _fill_cache(self) -> None:
        with ThreadPoolExecutor(min(8, usable_cpus())) as pool:  # decoding is CPU-bound: the CPUs this process has
            images = list(pool.map(self._read_resized, range(len(self))))
        if self._cache_mode == "ram":
            self._images = images
            nbytes = sum(x.nbytes for x in images)
            size = f"{nbytes / 2**30:.2f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MB"
            note = " by cache=auto (cache=False reads them from disk each time)" if self._auto_cache else ""
            log.info(f"Cached {len(images)} images in RAM ({size}){note}")

    def load_image(self, i: int) -> np.ndarray:
        """(h, w, 3) BGR uint8 with the long side resized to imgsz (§5.1)."""
        return self._images[i] if self._images is not None else self._read_resized(i)

    def load(self, i: int, resample: bool = False) -> tuple[np.ndarray, Instances]:
        """Resized image i and its instances in its pixels (float32; polygons resampled per §5.9 when asked)."""
        img = self.load_image(i)
        h, w = img.shape[:2]
        classes, polys = self.store.get(i)
        if resample:
            n = resample_count(polys)
            polys = [resample_polygon(p, n) for p in polys]
        size = np.array([w, h], np.float32)
        return img, with_polygons(classes, [p * size for p in polys])

    # ---- samples ------------------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Sample:
        h0, w0 = (int(v) for v in self.store.shapes[index])
        if not self.augment:
            return self._val_sample(index, h0, w0)
        rng = self.rng(index)
        if self.rect:
            img, inst = self.transform.rect(*self.load(index), tuple(self.batch_shapes[self.batch[index]]), rng)
        else:
            img, inst = self.transform(index, len(self), self.load, rng)
        return self.format(img, inst, self.im_files[index], (h0, w0), ((1.0, 1.0), (0.0, 0.0)))

    def _val_sample(self, index: int, h0: int, w0: int) -> Sample:
        img, inst = self.load(index, resample=True)
        h, w = img.shape[:2]
        shape = tuple(self.batch_shapes[self.batch[index]]) if self.rect else (self.imgsz, self.imgsz)
        img, (r, _), (left, top) = letterbox(img, shape, auto=False, scaleup=False)
        shift = np.array([left, top], np.float32)
        polys = [p * np.float32(r) + shift for p in inst.polygons]
        ratio_pad = ((h / h0 * r, w / w0 * r), (float(left), float(top)))
        return self.format(img, with_polygons(inst.classes, polys), self.im_files[index], (h0, w0), ratio_pad)

    def format(self, img: np.ndarray, inst: Instances, path: str, orig_shape: tuple[int, int], ratio_pad) -> Sample:
        """Masks at 1/mask_ratio (instances reordered largest first when overlapping), boxes as xywhn, RGB CHW."""
        big_h, big_w = img.shape[:2]
        if self.overlap_mask:
            masks, order = overlap_mask(inst.polygons, (big_h, big_w), self.mask_ratio)
            inst = inst.select(order)
        else:
            masks = instance_masks(inst.polygons, (big_h, big_w), self.mask_ratio)
        b = inst.boxes_xyxy.astype(np.float32)
        xywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        xywhn = xywh / np.array([big_w, big_h, big_w, big_h], np.float32)
        image = torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))
        return Sample(
            image,
            torch.from_numpy(inst.classes.astype(np.int64)),
            torch.from_numpy(xywhn.reshape(-1, 4)),
            torch.from_numpy(masks),
            path,
            orig_shape,
            ratio_pad,
        )
