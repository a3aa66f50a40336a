"""Verify a dataset's labels once and cache the result (numpy arrays, no pickle) keyed by a hash of the files.

The cache sits beside the labels folder (`labels/train.yoloseg-cache.npz`); when that folder is read-only it goes
under the user cache folder instead, and when that fails too it is kept in memory only. Input files are never
modified.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.files import atomic_path
from ..utils.log import log
from .errors import DatasetError
from .images import label_path
from .labels import STATUS_CORRUPT, STATUS_REPAIRED, ImageLabels, check_image_and_label

CACHE_VERSION = "yoloseg-labels-1"
MAX_LISTED = 30  # per-file problems printed; the rest are counted


@dataclass
class LabelStore:
    """Checked labels of the usable images of a split, packed into flat arrays (cheap to copy into workers).

    im_files: N image paths; shapes (N, 2) int32 (h0, w0) after EXIF orientation; orientations (N,) int8;
    inst_offsets (N+1,) into classes (M,) int64 and pt_offsets (M+1,); pt_offsets index points (P, 2) float32
    (normalised). report: counts and the per-file problem list [[file, message], ...].
    """

    im_files: list[str]
    shapes: np.ndarray
    orientations: np.ndarray
    inst_offsets: np.ndarray
    classes: np.ndarray
    pt_offsets: np.ndarray
    points: np.ndarray
    report: dict

    def __len__(self) -> int:
        return len(self.im_files)

    def get(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(classes (n,) int64, n normalised polygons (K, 2) float32) of image i."""
        a, b = self.inst_offsets[i], self.inst_offsets[i + 1]
        offs = self.pt_offsets[a : b + 1]
        return self.classes[a:b].copy(), [self.points[offs[k] : offs[k + 1]] for k in range(b - a)]

    def instance_counts(self) -> np.ndarray:
        return np.diff(self.inst_offsets)

    @classmethod
    def from_records(cls, records: list[ImageLabels], report: dict) -> LabelStore:
        counts = [len(r.classes) for r in records]
        polys = [p for r in records for p in r.polygons]
        return cls(
            [r.im_file for r in records],
            np.array([r.shape for r in records], np.int32).reshape(-1, 2),
            np.array([r.orientation for r in records], np.int8),
            np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
            np.concatenate([r.classes for r in records]).astype(np.int64) if records else np.zeros(0, np.int64),
            np.concatenate([[0], np.cumsum([len(p) for p in polys], dtype=np.int64)]),
            np.concatenate(polys).astype(np.float32) if polys else np.zeros((0, 2), np.float32),
            report,
        )

    def select(self, keep_images: np.ndarray, keep_instances: np.ndarray | None = None) -> LabelStore:
        """A store with images `keep_images` (int indices, in that order) and only instances where the (M,) bool
        `keep_instances` holds."""
        records = []
        for i in keep_images:
            c, p = self.get(int(i))
            if keep_instances is not None:
                m = keep_instances[self.inst_offsets[i] : self.inst_offsets[i + 1]]
                c, p = c[m], [q for q, k in zip(p, m) if k]
            records.append(ImageLabels(self.im_files[i], tuple(self.shapes[i]), int(self.orientations[i]), c, p))
        return LabelStore.from_records(records, self.report)


def files_hash(im_files: list[str], label_files: list[Path], nc: int, task: str) -> str:
    """sha256 over every image and label path with its size and mtime, plus the scan arguments."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, nc, task]).encode())
    for f in (*im_files, *label_files):
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def user_cache_dir() -> Path:
    """`$YOLOSEG_CACHE_DIR`, else `$XDG_CACHE_HOME/yoloseg`, else `~/.cache/yoloseg`."""
    if os.environ.get("YOLOSEG_CACHE_DIR"):
        return Path(os.environ["YOLOSEG_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yoloseg"


def cache_paths(label_files: list[Path]) -> list[Path]:
    """Where the cache may live: beside the first labels folder, then under the user cache folder."""
    labels_dir = Path(label_files[0]).parent
    primary = labels_dir.parent / f"{labels_dir.name}.yoloseg-cache.npz"
    key = hashlib.sha256(str(primary.resolve()).encode()).hexdigest()[:16]
    return [primary, user_cache_dir() / "labels" / f"{labels_dir.name}-{key}.npz"]


def writable_dir(d: Path) -> bool:
    """True if `d` is (or can be made) a folder we may write into. Respects missing write bits even for root."""
    d = d if d.exists() else next((p for p in d.parents if p.exists()), d)
    try:
        return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & 0o222)
    except OSError:
        return False


def save_cache(path: Path, store: LabelStore, hash_: str) -> bool:
    """Write the cache atomically; False (nothing written) when the folder is not writable."""
    if not writable_dir(path.parent):
        return False
    arrays = {
        k: getattr(store, k) for k in ("shapes", "orientations", "inst_offsets", "classes", "pt_offsets", "points")
    }
    files = np.frombuffer("\0".join(store.im_files).encode("utf-8"), np.uint8)
    meta = json.dumps({"version": CACHE_VERSION, "hash": hash_, "report": store.report})
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, im_files=files, meta=np.frombuffer(meta.encode("utf-8"), np.uint8), **arrays)
    except OSError:
        return False
    return True


def load_cache(path: Path, hash_: str) -> LabelStore | None:
    """The cached store if `path` holds a cache of this version and hash, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            if meta.get("version") != CACHE_VERSION or meta.get("hash") != hash_:
                return None
            files = z["im_files"].tobytes().decode("utf-8")
            arrays = {k: z[k] for k in ("shapes", "orientations", "inst_offsets", "classes", "pt_offsets", "points")}
    except Exception:  # missing, truncated, foreign or corrupt: rebuild
        return None
    return LabelStore(files.split("\0") if files else [], report=meta["report"], **arrays)


def verify_all(im_files: list[str], label_files: list[Path], nc: int, task: str, prefix: str) -> LabelStore:
    """Check every image/label pair (threads) and pack the usable ones with a report."""
    from tqdm import tqdm

    workers = max(1, min(8, os.cpu_count() or 1))
    args = zip(im_files, label_files)
    with ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda a: check_image_and_label(a[0], a[1], nc, task), args)
        records = list(tqdm(jobs, total=len(im_files), desc=f"{prefix}Scanning", disable=len(im_files) < 2000))
    good = [r for r in records if r.status != STATUS_CORRUPT]
    report = {
        "images": len(good),
        "instances": int(sum(len(r.classes) for r in good)),
        "backgrounds": sum(len(r.classes) == 0 for r in good),
        "missing_labels": sum(not Path(f).is_file() for f in label_files),
        "corrupt": len(records) - len(good),
        "repaired": sum(r.status == STATUS_REPAIRED for r in records),
        "messages": [[r.im_file, m] for r in records for m in r.messages],
    }
    return LabelStore.from_records(good, report)


def load_labels(im_files: list[str | Path], nc: int, task: str = "segment", prefix: str = "") -> LabelStore:
    """Checked labels of `im_files`, from the cache when it is current. Logs a summary line and the problems.

    Raises DatasetError listing the problems when no usable image remains.
    """
    im_files = [str(f) for f in im_files]
    label_files = [label_path(f) for f in im_files]
    hash_ = files_hash(im_files, label_files, nc, task)
    places = cache_paths(label_files) if im_files else []
    store, where = next(((s, p) for p in places if (s := load_cache(p, hash_)) is not None), (None, None))
    if store is None:
        store = verify_all(im_files, label_files, nc, task, prefix)
        where = next((p for p in places if save_cache(p, store, hash_)), None)
    _log_report(store.report, where, prefix, Path(label_files[0]).parent if label_files else None)
    if len(store) == 0:
        raise DatasetError(f"{prefix}no usable images in {len(im_files)} file(s):\n{problem_list(store.report)}")
    return store


def problem_list(report: dict, limit: int = MAX_LISTED) -> str:
    msgs = report["messages"]
    lines = [f"  {f}: {m}" for f, m in msgs[:limit]]
    if len(msgs) > limit:
        lines.append(f"  ... and {len(msgs) - limit} more")
    return "\n".join(lines) if lines else "  (no images found)"


def _log_report(report: dict, cache: Path | None, prefix: str, labels_dir: Path | None) -> None:
    r = report
    where = f"cache {cache}" if cache else "cache kept in memory (no writable cache folder)"
    log.info(
        f"{prefix}Scanned {labels_dir}: {r['images']} images, {r['instances']} instances, {r['backgrounds']} "
        f"backgrounds, {r['corrupt']} corrupt, {r['repaired']} repaired ({where})"
    )
    if r["messages"]:
        log.warning(f"{prefix}{len(r['messages'])} label/image problem(s):\n{problem_list(r)}")
