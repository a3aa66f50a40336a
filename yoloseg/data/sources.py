"""Prediction inputs: turn whatever the user passes as `source` into batches of BGR images.

Accepted: an image or video file, a folder (searched recursively), a glob pattern, a `.txt` list of paths, an
http(s) URL (downloaded first when it names a file), a webcam index or an rtsp/rtmp/tcp/http stream, a numpy HWC
BGR array, a PIL image, a torch BCHW float tensor (RGB, 0-1, fed to the model as is), or a list of these.

`load_sources(...)` resolves every path at once (so a missing file fails before any work), then decodes lazily:
iterating yields `SourceBatch(paths, images, infos, frames, tensor)` batches, one image or frame at a time in
memory per batch slot.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import math
import os
import queue
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from ..utils.log import log

IMG_SUFFIXES = ("bmp", "jpeg", "jpg", "jp2", "mpo", "png", "pbm", "pgm", "ppm", "tif", "tiff", "webp")
VID_SUFFIXES = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv", "webm")
STREAM_SCHEMES = ("rtsp", "rtmp", "tcp", "http", "https")
_STREAM_QUEUE = 30  # frames kept with stream_buffer=True before the reader waits


class SourceBatch(NamedTuple):
    """One batch of inputs.

    paths: per item, the file path (video path for frames; 'image0.jpg', ... for in-memory inputs).
    images: per item, the original (h0, w0, 3) uint8 BGR image.
    infos: per item, the console prefix, e.g. 'image 1/2 /data/bus.jpg' or 'video 1/1 (frame 3/300) /data/a.mp4'.
    frames: per item, the frame number (1-based) for videos and streams, None for still images.
    tensor: for torch-tensor sources, the (B, 3, H, W) float RGB 0-1 input to feed as is; else None.
    """

    paths: list[str]
    images: list[np.ndarray]
    infos: list[str]
    frames: list[int | None]
    tensor: torch.Tensor | None = None


@dataclass
class _Item:
    kind: str  # 'image' | 'video' | 'stream' | 'array'
    path: str
    value: Any = None  # the array for 'array', the capture source (int or str) for 'stream'
    strict: bool = True  # raise when unreadable (explicit sources) rather than warn and skip (folder members)


@dataclass
class Sources:
    """Resolved prediction inputs; iterate for `SourceBatch`es. `fps[path]` holds each opened video's frame rate."""

    items: list[_Item]
    batch: int = 1
    vid_stride: int = 1
    stream_buffer: bool = False
    tensor: torch.Tensor | None = None
    fps: dict[str, float] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """'tensor', 'stream' (any live stream), 'video' (any video file) or 'image'."""
        if self.tensor is not None:
            return "tensor"
        kinds = {it.kind for it in self.items}
        return "stream" if "stream" in kinds else "video" if "video" in kinds else "image"

    def __len__(self) -> int:
        return len(self.items) if self.tensor is None else len(self.tensor)

    def __iter__(self) -> Iterator[SourceBatch]:
        if self.tensor is not None:
            yield _tensor_batch(self.tensor)
            return
        paths, images, infos, frames = [], [], [], []
        for path, img, info, frame, is_stream in self._frames():
            paths.append(path)
            images.append(img)
            infos.append(info)
            frames.append(frame)
            if len(paths) >= self.batch or is_stream:  # live frames are never held back waiting for a batch
                yield SourceBatch(paths, images, infos, frames)
                paths, images, infos, frames = [], [], [], []
        if paths:
            yield SourceBatch(paths, images, infos, frames)

    def _frames(self) -> Iterator[tuple[str, np.ndarray, str, int | None, bool]]:
        n = len(self.items)
        for k, it in enumerate(self.items, 1):
            if it.kind == "array":
                yield it.path, it.value, f"image {k}/{n} {it.path}", None, False
            elif it.kind == "image":
                try:
                    img = read_image(it.path)
                except ValueError as e:
                    if it.strict:
                        raise
                    log.warning(f"WARNING: skipping {e}")
                    continue
                yield it.path, img, f"image {k}/{n} {it.path}", None, False
            elif it.kind == "video":
                try:
                    for frame, total, img in self._video_frames(it.path):
                        yield it.path, img, f"video {k}/{n} (frame {frame}/{total}) {it.path}", frame, False
                except ValueError as e:
                    if it.strict:
                        raise
                    log.warning(f"WARNING: skipping {e}")
            else:
                reader = StreamReader(it.value, self.vid_stride, self.stream_buffer)
                self.fps[it.path] = reader.fps
                with reader:
                    for frame, img in reader:
                        yield it.path, img, f"stream {k}/{n} (frame {frame}) {it.path}", frame, True

    def _video_frames(self, path: str) -> Iterator[tuple[int, int, np.ndarray]]:
        """(frame number, frame count, image) for frames 0, s, 2s, ... (s = vid_stride) of a video file."""
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise ValueError(f"video '{path}': cannot be opened by OpenCV (corrupt or unsupported codec)")
        try:
            self.fps[path] = _fps(cap)
            total = max(math.ceil(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) / self.vid_stride), 0)
            frame = 0
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    return
                frame += 1
                yield frame, max(total, frame), img
                for _ in range(self.vid_stride - 1):  # frames 0, s, 2s, ...: skip the rest without decoding
                    if not cap.grab():
                        return
        finally:
            cap.release()


def _fps(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else 30.0


class StreamReader:
    """Read a live source (webcam index or stream URL) on a thread.

    With `buffer=False` only the newest frame is kept (stale frames are dropped, so inference always sees the
    present); with `buffer=True` every `vid_stride`-th frame is queued (up to 30, then the reader waits).
    Iterate for (frame number, image); iteration ends when the source ends. Use as a context manager to stop it.
    """

    def __init__(self, source: int | str, vid_stride: int = 1, buffer: bool = False, timeout: float = 10.0):
        self.source = source
        self.cap = cv2.VideoCapture(source)
        if not self.cap.isOpened():
            raise ConnectionError(f"stream '{source}': cannot be opened (check the camera index or the URL)")
        self.fps = _fps(self.cap)
        self.vid_stride = max(int(vid_stride), 1)
        self.buffer = buffer
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue(maxsize=_STREAM_QUEUE if buffer else 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"yoloseg-stream-{source}")
        self._thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                if not self.cap.grab():
                    break
                n += 1
                if (n - 1) % self.vid_stride:
                    continue
                ok, img = self.cap.retrieve()
                if not ok:
                    break
                self._put((n - 1) // self.vid_stride + 1, img)
        finally:
            self._put(None)

    def _put(self, frame: int | None, img: np.ndarray | None = None) -> None:
        item = None if frame is None else (frame, img)
        while not self._stop.is_set():
            if not self.buffer:  # keep only the newest frame
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            try:
                item = self._queue.get(timeout=self.timeout)
            except queue.Empty:
                log.warning(f"WARNING: stream '{self.source}' sent no frame for {self.timeout:g} s, stopping")
                return
            if item is None:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.cap.release()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to (h, w, 3) uint8 BGR with its EXIF orientation applied (OpenCV's IMREAD_COLOR)."""
    try:
        buf = np.fromfile(str(path), np.uint8)
    except OSError as e:
        raise ValueError(f"image '{path}': cannot be read ({e})") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise ValueError(f"image '{path}': cannot be decoded (corrupt or not an image)")
    return img


def as_bgr(img: Any, name: str = "image") -> np.ndarray:
    """A numpy HWC BGR array (uint8; gray and BGRA converted) or a PIL image (RGB -> BGR) as (h, w, 3) uint8 BGR."""
    if not isinstance(img, np.ndarray):  # PIL image
        arr = np.asarray(img.convert("RGB"))
        _check_not_empty(arr, name)
        return np.ascontiguousarray(arr[..., ::-1])
    _check_not_empty(img, name)
    if img.dtype != np.uint8:
        raise TypeError(f"{name}: numpy images must be uint8 HWC BGR, got dtype {img.dtype}")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3:
        raise TypeError(f"{name}: numpy images must be HWC with 1, 3 or 4 channels, got shape {img.shape}")
    return np.ascontiguousarray(img)


def _check_not_empty(img: np.ndarray, name: str) -> None:
    if img.ndim >= 2 and 0 in img.shape[:2]:
        raise ValueError(
            f"{name}: the image is empty (shape {img.shape}); pass an image at least 1 pixel high and wide"
        )


def _is_pil(x: Any) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _check_tensor(t: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, 3, H, W) or (3, H, W) float RGB 0-1 with H, W multiples of `stride` -> (B, 3, H, W)."""
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] != 3:
        raise ValueError(f"tensor source: expected (B, 3, H, W) RGB, got shape {tuple(t.shape)}")
    if not t.numel():
        raise ValueError(f"tensor source: the tensor is empty (shape {tuple(t.shape)}); pass at least one image")
    if t.shape[2] % stride or t.shape[3] % stride:
        raise ValueError(
            f"tensor source: height and width must be multiples of the model stride {stride}, got {tuple(t.shape)}; "
            "pass numpy images instead to have them letterboxed"
        )
    if not t.is_floating_point():
        raise ValueError(f"tensor source: expected a float tensor with values in 0-1, got {t.dtype}")
    if t.numel() and float(t.max()) > 1.0 + 1e-6:
        log.warning("WARNING: tensor source values exceed 1.0; dividing by 255 (inputs should be RGB 0-1)")
        t = t / 255
    return t


def _tensor_batch(t: torch.Tensor) -> SourceBatch:
    rgb = (t.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    images = [np.ascontiguousarray(im[..., ::-1]) for im in rgb]
    n = len(images)
    paths = [f"image{i}.jpg" for i in range(n)]
    return SourceBatch(paths, images, [f"image {i + 1}/{n} {p}" for i, p in enumerate(paths)], [None] * n, t)


def _suffix(p: str) -> str:
    return Path(urllib.parse.urlparse(p).path if "://" in p else p).suffix[1:].lower()


def _download(url: str) -> Path:
    """Download a file URL into a per-URL folder of the temp dir; returns the local file."""
    from ..utils.download import download_file

    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    folder = Path(tempfile.gettempdir()) / "yoloseg-downloads" / hashlib.sha1(url.encode()).hexdigest()[:12]
    return download_file(url, folder / name, progress=False)


def _probe_is_image(url: str, timeout: float = 10.0) -> bool:
    """True when an http(s) URL without a file suffix serves an image (by its Content-Type)."""
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "yoloseg"}, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.headers.get("Content-Type", "").startswith("image/")
    except OSError:
        return False


def _resolve_str(src: str, items: list[_Item]) -> None:
    """Expand one string source into items (raises on a missing or unsupported explicit source)."""
    s = src.strip()
    if s.isnumeric():  # webcam index
        items.append(_Item("stream", s, int(s)))
        return
    scheme = urllib.parse.urlparse(s).scheme.lower()
    if scheme in STREAM_SCHEMES and "://" in s:
        suffix = _suffix(s)
        if scheme in ("http", "https") and (
            suffix in IMG_SUFFIXES or suffix in VID_SUFFIXES or (not suffix and _probe_is_image(s))
        ):
            local = _download(s)
            kind = "video" if suffix in VID_SUFFIXES else "image"
            items.append(_Item(kind, str(local)))
        else:
            items.append(_Item("stream", s, s))
        return
    if any(c in s for c in "*?[") and not Path(s).exists():
        matches = sorted(globlib.glob(s, recursive=True))
        found = [_Item(_kind(m), m, strict=False) for m in matches if os.path.isfile(m) and _kind(m)]
        if not found:
            raise FileNotFoundError(f"source '{s}': the pattern matches no image or video file")
        items.extend(found)
        return
    p = Path(s).expanduser()
    if p.is_dir():
        found = [
            _Item(_kind(str(f)), str(f), strict=False) for f in sorted(p.rglob("*")) if f.is_file() and _kind(str(f))
        ]
        if not found:
            raise FileNotFoundError(
                f"source '{s}': the folder holds no image ({', '.join(IMG_SUFFIXES)}) or video "
                f"({', '.join(VID_SUFFIXES)}) file"
            )
        items.extend(found)
        return
    if not p.exists():
        raise FileNotFoundError(f"source '{s}' does not exist")
    if p.suffix.lower() == ".txt":
        _resolve_list_file(p, items)
        return
    kind = _kind(str(p))
    if kind is None:
        raise ValueError(
            f"source '{s}': unsupported file type '{p.suffix}'. Images: {', '.join(IMG_SUFFIXES)}; "
            f"videos: {', '.join(VID_SUFFIXES)}; or a .txt list of paths"
        )
    items.append(_Item(kind, str(p)))


def _resolve_list_file(txt: Path, items: list[_Item]) -> None:
    """A .txt with one path per line (relative paths: against the current folder, else the list's folder)."""
    count = 0
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        q = Path(line).expanduser()
        if not q.is_absolute() and not q.exists():
            q = txt.parent / q
        kind = _kind(str(q))
        if not q.is_file() or kind is None:
            log.warning(f"WARNING: {txt}: skipping '{line}' ({'not an image or video' if q.is_file() else 'missing'})")
            continue
        items.append(_Item(kind, str(q), strict=False))
        count += 1
    if not count:
        raise FileNotFoundError(f"source '{txt}': the list names no existing image or video file")


def _kind(path: str) -> str | None:
    s = _suffix(path)
    return "image" if s in IMG_SUFFIXES else "video" if s in VID_SUFFIXES else None


def load_sources(
    source: Any,
    imgsz: int | tuple[int, int] = 640,
    stride: int = 32,
    vid_stride: int = 1,
    stream_buffer: bool = False,
    batch: int = 1,
) -> Sources:
    """Resolve `source` (see the module docstring) into an iterable of `SourceBatch`es of up to `batch` items.

    Raises FileNotFoundError / ValueError naming the source when an explicit file is missing, has an unsupported
    suffix or (while iterating) cannot be decoded; files found in a folder, glob or list that cannot be decoded
    are skipped with a warning. `imgsz` is unused for files (the predictor letterboxes); tensors must have H, W
    divisible by `stride`.
    """
    del imgsz  # the predictor letterboxes; kept for a uniform signature
    vid_stride = max(int(vid_stride), 1)
    batch = max(int(batch), 1)
    if isinstance(source, torch.Tensor):
        return Sources([], batch, vid_stride, stream_buffer, tensor=_check_tensor(source, stride))
    entries = list(source) if isinstance(source, (list, tuple)) else [source]
    if not entries:
        raise ValueError("source is an empty list")
    items: list[_Item] = []
    arrays = 0
    for src in entries:
        if isinstance(src, (str, Path)):
            _resolve_str(str(src), items)
        elif isinstance(src, int) and not isinstance(src, bool):
            items.append(_Item("stream", str(src), src))
        elif isinstance(src, np.ndarray) or _is_pil(src):
            name = getattr(src, "filename", "") or f"image{arrays}.jpg"
            items.append(_Item("array", str(name), as_bgr(src, f"source {len(items)}")))
            arrays += 1
        elif isinstance(src, torch.Tensor):
            raise TypeError("tensor sources cannot be mixed with other sources; pass the (B, 3, H, W) tensor alone")
        else:
            raise TypeError(
                f"unsupported source type {type(src).__name__}: pass a path, URL, glob, webcam index, numpy array, "
                "PIL image, torch tensor or a list of these"
            )
    return Sources(items, batch, vid_stride, stream_buffer)
