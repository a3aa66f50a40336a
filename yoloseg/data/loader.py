"""DataLoader construction: seeded shuffling per epoch, deterministic workers, collation into `Batch`."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .sample import collate


class SeededSampler(Sampler[int]):
    """Indices in order, or shuffled by a generator seeded with (seed + epoch): same seed, same order."""

    def __init__(self, n: int, shuffle: bool, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _worker_init(worker_id: int) -> None:
    """Keep each worker single-threaded: OpenCV and torch threads inside workers only oversubscribe the CPU."""
    import cv2

    cv2.setNumThreads(0)
    torch.set_num_threads(1)


class SegmentLoader(DataLoader):
    """A DataLoader whose `set_epoch` reaches the sampler and the dataset (fresh workers each epoch carry it)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def close_mosaic(self) -> None:
        if hasattr(self.dataset, "close_mosaic"):
            self.dataset.close_mosaic()


def build_dataloader(
    dataset, batch_size: int, workers: int = 0, shuffle: bool = False, seed: int = 0, rank: int = -1
) -> SegmentLoader:
    """A loader yielding `Batch`es. Samples depend only on (seed, epoch, index), so batches are identical for any
    number of workers; workers are not persistent, so `set_epoch` / `close_mosaic` apply from the next epoch.

    rank != -1 uses a DistributedSampler (one shard per process). Rect datasets keep their batch order.
    """
    if getattr(dataset, "rect", False):
        shuffle = False  # rect batches are built from the aspect-ratio order
    if rank != -1:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=False)
    else:
        sampler = SeededSampler(len(dataset), shuffle, seed)
    workers = max(0, min(int(workers), os.cpu_count() or 1))
    return SegmentLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=functools.partial(collate, overlap=getattr(dataset, "overlap_mask", True)),
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
    )
