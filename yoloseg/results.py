"""Prediction results: `Results` for one image, with `Boxes` and `Masks` views (the incumbent's attribute names).

`Results[idx]` (an int, slice, index list or boolean mask) returns a new `Results` whose boxes and masks are
sliced together. Tensors stay where the predictor left them; `cpu()`, `numpy()` and `to()` return converted copies.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .ops.boxes import scale_coords, xyxy2xywh
from .utils.files import atomic_path, atomic_write_bytes
from .utils.log import log

ArrayLike = torch.Tensor | np.ndarray


def _normalize_index(idx: Any, n: int) -> Any:
    """Keep the instance axis: an int i becomes the slice [i:i+1] (IndexError outside [-n, n), so that iterating
    a Results / Boxes / Masks stops)."""
    if isinstance(idx, (int, np.integer)) and not isinstance(idx, bool):
        i = int(idx)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} detections")
        i %= n
        return slice(i, i + 1)
    if isinstance(idx, torch.Tensor) and idx.ndim == 0 and not idx.dtype == torch.bool:
        return _normalize_index(int(idx), n)
    if isinstance(idx, list):
        return np.asarray(idx, dtype=bool if idx and isinstance(idx[0], (bool, np.bool_)) else np.int64)
    return idx


def _take(data: ArrayLike, idx: Any) -> ArrayLike:
    """data[idx] for a tensor or array with the index converted to the data's kind (bool masks, index lists)."""
    if isinstance(data, torch.Tensor) and isinstance(idx, np.ndarray):
        idx = torch.from_numpy(idx).to(data.device)
    elif isinstance(data, np.ndarray) and isinstance(idx, torch.Tensor):
        idx = idx.cpu().numpy()
    return data[idx]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class _TensorView:
    """Common base of Boxes and Masks: a `data` tensor/array plus the original image shape."""

    def __init__(self, data: ArrayLike, orig_shape: Sequence[int]):
        self.data = data
        self.orig_shape = tuple(int(s) for s in orig_shape[:2])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __len__(self) -> int:
        return len(self.data)

    def _new(self, data: ArrayLike):
        return type(self)(data, self.orig_shape)

    def __getitem__(self, idx: Any):
        return self._new(_take(self.data, _normalize_index(idx, len(self.data))))

    def cpu(self):
        return self._new(self.data.cpu()) if isinstance(self.data, torch.Tensor) else self._new(self.data)

    def numpy(self):
        return self._new(_to_numpy(self.data))

    def cuda(self):
        return self.to("cuda")

    def to(self, *args, **kwargs):
        data = self.data if isinstance(self.data, torch.Tensor) else torch.as_tensor(self.data)
        return self._new(data.to(*args, **kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, orig_shape={self.orig_shape})\ndata: {self.data!r}"


class Boxes(_TensorView):
    """Detected boxes: `data` (N, 6) x1 y1 x2 y2 conf cls in original-image pixels (N, 7 with a track id
    before conf and cls: x1 y1 x2 y2 id conf cls)."""

    def __init__(self, data: ArrayLike, orig_shape: Sequence[int]):
        if data.ndim == 1:
            data = data[None, :]
        if data.shape[-1] not in (6, 7):
            raise ValueError(f"Boxes expects (N, 6) or (N, 7) data, got {tuple(data.shape)}")
        super().__init__(data, orig_shape)
        self.is_track = data.shape[-1] == 7

    @property
    def xyxy(self) -> ArrayLike:
        """(N, 4) x1 y1 x2 y2 pixels."""
        return self.data[:, :4]

    @property
    def conf(self) -> ArrayLike:
        """(N,) confidence."""
        return self.data[:, -2]

    @property
    def cls(self) -> ArrayLike:
        """(N,) class id (float, as the incumbent)."""
        return self.data[:, -1]

    @property
    def id(self) -> ArrayLike | None:
        """(N,) track ids, or None when not tracking."""
        return self.data[:, -3] if self.is_track else None

    @property
    def xywh(self) -> ArrayLike:
        """(N, 4) centre-x centre-y width height pixels."""
        return xyxy2xywh(self.xyxy)

    @property
    def xyxyn(self) -> ArrayLike:
        """(N, 4) xyxy normalised by the original (w, h)."""
        return self.xyxy / self._whwh(self.xyxy)

    @property
    def xywhn(self) -> ArrayLike:
        """(N, 4) xywh normalised by the original (w, h)."""
        return self.xywh / self._whwh(self.xyxy)

    def _whwh(self, like: ArrayLike) -> ArrayLike:
        h, w = self.orig_shape
        whwh = [w, h, w, h]
        if isinstance(like, torch.Tensor):
            return torch.tensor(
                whwh, dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device
            )
        return np.array(whwh, dtype=like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)


class Masks(_TensorView):
    """Instance masks: `data` (N, H, W) uint8 0/1 at the letterboxed network input size (default) or at the original
    size (retina_masks). `xy` / `xyn` give one polygon per mask in original-image pixels / normalised (§5.7)."""

    def __init__(self, data: ArrayLike, orig_shape: Sequence[int]):
        if data.ndim == 2:
            data = data[None, :]
        super().__init__(data, orig_shape)
        self._xy: list[np.ndarray] | None = None

    def __getitem__(self, idx: Any) -> Masks:
        idx = _normalize_index(idx, len(self.data))
        out = self._new(_take(self.data, idx))
        if self._xy is not None:  # slice the cached polygons too
            picked = np.arange(len(self._xy))[_to_numpy(idx) if isinstance(idx, torch.Tensor) else idx]
            out._xy = [self._xy[i] for i in np.atleast_1d(picked)]
        return out

    def _mask_polygons(self) -> list[np.ndarray]:
        """Merged outer contours per mask in the mask's own pixel frame: list of (K, 2) float32."""
        from .ops.polygons import masks_to_polygons

        return masks_to_polygons(_to_numpy(self.data).astype(np.uint8, copy=False))

    @property
    def xy(self) -> list[np.ndarray]:
        """Per mask a (K, 2) float32 polygon in original-image pixels ((0, 2) for an empty mask); cached."""
        if self._xy is None:
            polys = self._mask_polygons()
            self._xy = _scale_polygons(polys, self.data.shape[1:], self.orig_shape)
        return self._xy

    @property
    def xyn(self) -> list[np.ndarray]:
        """Per mask a (K, 2) float32 polygon normalised by the original (w, h)."""
        h, w = self.orig_shape
        scale = np.array([w, h], dtype=np.float32)
        return [p / scale for p in self.xy]

    def polygons(self, holes: bool = True, parts: bool = True) -> list[list[dict[str, Any]]]:
        """Per mask, its parts as {'exterior': (K, 2) float32, 'holes': [(K, 2) float32, ...]} in original pixels.

        Unlike `xy` (one merged outline, holes dropped, as the incumbent), every connected part is kept apart and
        holes are returned (`holes=False` / `parts=False` give the outer outline / the largest part only).
        """
        from .ops.polygons import mask_to_polygons

        data = _to_numpy(self.data).astype(np.uint8, copy=False)
        mask_shape = data.shape[1:]
        out = []
        for m in data:
            shapes = mask_to_polygons(m, holes=holes, parts=parts)
            out.append(
                [
                    {
                        "exterior": _scale_polygons([s["exterior"]], mask_shape, self.orig_shape)[0],
                        "holes": _scale_polygons(list(s.get("holes", [])), mask_shape, self.orig_shape),
                    }
                    for s in shapes
                ]
            )
        return out


def _scale_polygons(polys: list[np.ndarray], mask_shape: Sequence[int], orig_shape: Sequence[int]) -> list[np.ndarray]:
    """Map polygons from the mask frame to original pixels in one vectorised call (concatenate, scale, split)."""
    if not polys:
        return []
    lengths = [len(p) for p in polys]
    flat = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in polys], 0)
    flat = scale_coords(tuple(mask_shape), flat, orig_shape).astype(np.float32, copy=False)
    return np.split(flat, np.cumsum(lengths)[:-1])


class Results:
    """Predictions for one image.

    Args:
        orig_img: (h0, w0, 3) uint8 BGR original image.
        path: image path (or a name such as 'image0.jpg' for in-memory inputs).
        names: {class id: name}.
        boxes: (N, 6) x1 y1 x2 y2 conf cls in original pixels, or None.
        masks: (N, H, W) uint8 0/1 (letterboxed input frame, or original frame with retina_masks), or None.
        speed: {'preprocess', 'inference', 'postprocess'} in ms per image.
        save_dir: folder of the run, used by the predictor for saving.
    """

    def __init__(
        self,
        orig_img: np.ndarray,
        path: str,
        names: dict[int, str],
        boxes: ArrayLike | None = None,
        masks: ArrayLike | None = None,
        speed: dict[str, float] | None = None,
        save_dir: str | None = None,
    ):
        self.orig_img = orig_img
        self.orig_shape = tuple(orig_img.shape[:2])
        self.path = str(path)
        self.names = names
        self.boxes = Boxes(boxes, self.orig_shape) if boxes is not None else None
        self.masks = Masks(masks, self.orig_shape) if masks is not None else None
        self.probs = self.keypoints = self.obb = None
        self.speed = dict(speed) if speed else {"preprocess": None, "inference": None, "postprocess": None}
        self.save_dir = save_dir

    # ---- container behaviour
    def __len__(self) -> int:
        for v in (self.boxes, self.masks):
            if v is not None:
                return len(v)
        return 0

    def __getitem__(self, idx: Any) -> Results:
        idx = _normalize_index(idx, len(self))
        return self._apply(lambda v: v[idx])

    def _apply(self, fn) -> Results:
        out = self.new()
        out.boxes = fn(self.boxes) if self.boxes is not None else None
        out.masks = fn(self.masks) if self.masks is not None else None
        return out

    def cpu(self) -> Results:
        return self._apply(lambda v: v.cpu())

    def numpy(self) -> Results:
        return self._apply(lambda v: v.numpy())

    def cuda(self) -> Results:
        return self._apply(lambda v: v.cuda())

    def to(self, *args, **kwargs) -> Results:
        return self._apply(lambda v: v.to(*args, **kwargs))

    def new(self) -> Results:
        """A Results for the same image with no predictions."""
        return Results(self.orig_img, self.path, self.names, speed=self.speed, save_dir=self.save_dir)

    def update(self, boxes: ArrayLike | None = None, masks: ArrayLike | None = None) -> None:
        """Replace the boxes (N, 6) and/or masks (N, H, W) in place."""
        if boxes is not None:
            self.boxes = Boxes(boxes, self.orig_shape)
        if masks is not None:
            self.masks = Masks(masks, self.orig_shape)

    def __repr__(self) -> str:
        n = len(self)
        return f"Results(path={self.path!r}, orig_shape={self.orig_shape}, {n} detections, speed={self.speed})"

    # ---- text
    def verbose(self) -> str:
        """'4 persons, 1 bus, ' (class counts in class-id order) or '(no detections), '."""
        if self.boxes is None or len(self.boxes) == 0:
            return "(no detections), "
        classes = _to_numpy(self.boxes.cls).astype(np.int64)
        ids, counts = np.unique(classes, return_counts=True)
        return "".join(
            f"{n} {self.names.get(int(c), str(c))}{'s' * (n > 1)}, " for c, n in zip(ids.tolist(), counts.tolist())
        )

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: name, class, confidence, box {x1, y1, x2, y2}, [track_id], segments {x, y}."""
        if self.boxes is None or len(self.boxes) == 0:
            return []
        h, w = self.orig_shape if normalize else (1, 1)
        data = _to_numpy(self.boxes.data).astype(np.float64)
        xyxy = data[:, :4] / np.array([w, h, w, h])
        confs, classes = data[:, -2], data[:, -1].astype(np.int64)
        ids = _to_numpy(self.boxes.id).astype(np.int64) if self.boxes.is_track else None
        polys = (self.masks.xyn if normalize else self.masks.xy) if self.masks is not None else None
        out = []
        for i in range(len(data)):
            row: dict[str, Any] = {
                "name": self.names.get(int(classes[i]), str(classes[i])),
                "class": int(classes[i]),
                "confidence": round(float(confs[i]), decimals),
                "box": dict(zip(("x1", "y1", "x2", "y2"), (round(float(v), decimals) for v in xyxy[i]))),
            }
            if ids is not None:
                row["track_id"] = int(ids[i])
            if polys is not None:
                p = polys[i].astype(np.float64)
                row["segments"] = {
                    "x": [round(float(v), decimals) for v in p[:, 0]],
                    "y": [round(float(v), decimals) for v in p[:, 1]],
                }
            out.append(row)
        return out

    def to_json(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as a JSON string."""
        return json.dumps(self.summary(normalize, decimals), indent=2)

    def to_df(self, normalize: bool = False, decimals: int = 5):
        """`summary()` as a pandas DataFrame (one row per detection)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Results.to_df() needs pandas, which is not installed: pip install pandas "
                "(or use to_json() / to_csv(), which need nothing extra)"
            ) from None
        return pd.DataFrame(self.summary(normalize, decimals))

    def to_csv(self, file: str | Path | None = None, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as CSV (columns name, class, confidence, box, [track_id], segments; dicts JSON-encoded).

        Returns the CSV text; also writes it to `file` when given.
        """
        rows = self.summary(normalize, decimals)
        columns = ["name", "class", "confidence", "box"]
        if rows and "track_id" in rows[0]:
            columns.append("track_id")
        if self.masks is not None:
            columns.append("segments")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([json.dumps(r[c]) if isinstance(r[c], dict) else r[c] for c in columns])
        text = buf.getvalue()
        if file is not None:
            atomic_write_bytes(file, text.encode("utf-8"))
        return text

    # ---- drawing and saving
    def plot(
        self,
        conf: bool = True,
        line_width: int | None = None,
        font_size: float | None = None,
        labels: bool = True,
        boxes: bool = True,
        masks: bool = True,
        img: np.ndarray | None = None,
        color_mode: str = "class",
        show: bool = False,
        save: bool = False,
        filename: str | None = None,
        **compat: Any,
    ) -> np.ndarray:
        """The image with translucent masks (alpha 0.5, class colours), boxes and 'name conf' labels drawn.

        Args:
            conf, labels, boxes, masks: draw confidences / labels / boxes / masks.
            img: (h0, w0, 3) uint8 BGR to draw on instead of a copy of `orig_img`.
            color_mode: 'class' or 'instance'.
            show / save / filename: also display / write the image.
            compat: the incumbent's other keywords (font, pil, probs, kpt_radius, kpt_line, txt_color) are accepted
                and have no effect (no keypoints or class probabilities in this task; OpenCV text only).
        Returns:
            (h0, w0, 3) uint8 BGR annotated image.
        """
        unknown = set(compat) - {"font", "pil", "probs", "kpt_radius", "kpt_line", "txt_color"}
        if unknown:
            raise TypeError(f"plot() got unexpected keyword arguments {sorted(unknown)}")
        from .plotting import annotate

        canvas = np.ascontiguousarray(img if img is not None else self.orig_img).copy()
        b = self.boxes
        if b is None or len(b) == 0:
            annotated = canvas
        else:
            annotated = annotate(
                canvas,
                _to_numpy(b.xyxy),
                _to_numpy(b.cls),
                self.names,
                confs=_to_numpy(b.conf),
                masks=_to_numpy(self.masks.data) if masks and self.masks is not None else None,
                ids=_to_numpy(b.id) if b.is_track else None,
                line_width=line_width,
                font_size=font_size,
                labels=labels,
                show_conf=conf,
                show_boxes=boxes,
                color_mode=color_mode,
            )
        if show:
            self.show(annotated)
        if save:
            self.save(filename, img=annotated)
        return annotated

    def show(self, img: np.ndarray | None = None, **kwargs) -> None:
        """Display the annotated image in a window (OpenCV GUI if available, else matplotlib)."""
        img = self.plot(**kwargs) if img is None else img
        try:
            cv2.imshow(self.path, img)
            cv2.waitKey(1)
        except cv2.error:
            try:
                import matplotlib.pyplot as plt
            except ImportError:
                log.warning("WARNING: cannot show images: no OpenCV GUI and no matplotlib")
                return
            plt.figure(self.path)
            plt.imshow(img[..., ::-1])
            plt.axis("off")
            plt.show(block=False)
            plt.pause(0.001)

    def save(self, filename: str | Path | None = None, img: np.ndarray | None = None, **kwargs) -> str:
        """Write the annotated image (default `results_<image name>`); returns the file path."""
        if filename is None:
            p = Path(self.path)
            suffix = p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".jpg"
            filename = f"results_{p.stem}{suffix}"
        img = self.plot(**kwargs) if img is None else img
        write_image(filename, img)
        return str(filename)

    def save_txt(self, txt_file: str | Path, save_conf: bool = False) -> str:
        """Append one line per detection to `txt_file`: `cls x1 y1 ... xn yn [conf] [id]` with the normalised
        polygon (boxes without masks: `cls xc yc w h`, normalised). Masks with fewer than 3 points are skipped."""
        if self.boxes is None or len(self.boxes) == 0:
            return str(txt_file)
        classes = _to_numpy(self.boxes.cls).astype(np.int64)
        confs = _to_numpy(self.boxes.conf)
        ids = _to_numpy(self.boxes.id).astype(np.int64) if self.boxes.is_track else None
        coords = self.masks.xyn if self.masks is not None else list(_to_numpy(self.boxes.xywhn).reshape(-1, 1, 4))
        lines = []
        for i, poly in enumerate(coords):
            if self.masks is not None and len(poly) < 3:
                continue
            values = [f"{int(classes[i])}"] + [f"{float(v):g}" for v in np.asarray(poly).reshape(-1)]
            if save_conf:
                values.append(f"{float(confs[i]):g}")
            if ids is not None:
                values.append(f"{int(ids[i])}")
            lines.append(" ".join(values) + "\n")
        txt_file = Path(txt_file)
        old = txt_file.read_bytes() if txt_file.is_file() else b""
        atomic_write_bytes(txt_file, old + "".join(lines).encode("utf-8"))
        return str(txt_file)

    def save_crop(self, save_dir: str | Path, file_name: str | Path = "im.jpg") -> None:
        """Save each detection's box crop (slightly enlarged, not masked) to `save_dir/<class name>/<file_name>.jpg`."""
        if self.boxes is None or len(self.boxes) == 0:
            return
        xyxy = _to_numpy(self.boxes.xyxy).astype(np.float64)
        classes = _to_numpy(self.boxes.cls).astype(np.int64)
        h0, w0 = self.orig_shape
        # enlarge by 2% + 10 px (as the incumbent's save_one_box), clip to the image
        wh = (xyxy[:, 2:] - xyxy[:, :2]) * 1.02 + 10
        centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        x1y1 = np.clip(np.floor(centre - wh / 2), 0, [w0, h0]).astype(np.int64)
        x2y2 = np.clip(np.floor(centre + wh / 2), 0, [w0, h0]).astype(np.int64)
        for i in range(len(xyxy)):
            crop = self.orig_img[x1y1[i, 1] : x2y2[i, 1], x1y1[i, 0] : x2y2[i, 0]]
            if crop.size == 0:
                continue
            folder = Path(save_dir) / self.names.get(int(classes[i]), str(classes[i]))
            write_image(_unique_file(folder / Path(file_name).with_suffix(".jpg")), crop)


def _unique_file(path: Path) -> Path:
    """`path`, or `stem2.jpg`, `stem3.jpg`, ... the first that does not exist."""
    if not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem}{n}{path.suffix}")).exists():
        n += 1
    return candidate


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Encode `img` by the file suffix (jpg when unknown) and write it atomically; raises OSError on failure."""
    path = Path(path)
    ext = path.suffix.lower() if path.suffix else ".jpg"
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise OSError(f"cannot encode an image as '{ext}' for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
