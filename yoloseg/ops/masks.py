"""Instance masks from prototype masks and coefficients (§5.5): assembly, upsampling, cropping, rescaling.

With boxes, upsampled masks are computed only inside each box's window, so time and memory follow the boxes' area
instead of N x H x W, and the thresholded masks are bit-identical to thresholding `F.interpolate` of the full masks:
a fast separable float32 pass decides every pixel whose value is clearly away from 0, and the few others are
recomputed by replaying PyTorch's bilinear kernel (align_corners=False) exactly on the same global source indices
and weights. Whether that kernel rounds with fused multiply-adds is checked once per device against
`F.interpolate`; where no replay matches, or a call would take PyTorch's other (small-output) kernel, those stages
run at full size as the reference does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from yoloseg.ops.boxes import RatioPad, letterbox_params

_PIXEL_BUDGET = 1 << 24  # float pixels per chunk on the full-size path
# Fast windows may round differently from the kernel by a few ulps of the largest logit; values within this fraction
# of it have their sign recomputed exactly (a wide margin over the error of two stages).
_SIGN_TOLERANCE = 2**-16
# Prototype pixels beyond a box (in prototype pixels) that its mask may read: the bilinear neighbours of the samples
# inside the box (1), a second resize stage (retina_masks), rounding.
MASK_READ_MARGIN = 3


def crop_mask(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero masks (N, h, w) outside boxes (N, 4) xyxy in mask pixels: keep column i iff x1 <= i < x2, rows alike."""
    _, h, w = masks.shape
    b = boxes if boxes.dtype == torch.float64 else boxes.float()
    x1, y1, x2, y2 = b[:, :, None].unbind(1)  # each (N, 1)
    cols = torch.arange(w, device=masks.device, dtype=b.dtype)[None, :]
    rows = torch.arange(h, device=masks.device, dtype=b.dtype)[None, :]
    keep_cols = (cols >= x1) & (cols < x2)  # (N, w)
    keep_rows = (rows >= y1) & (rows < y2)  # (N, h)
    inside = keep_rows[:, :, None] & keep_cols[:, None, :]
    return masks & inside if masks.dtype == torch.bool else masks * inside


@dataclass(frozen=True)
class _Stage:
    """One bilinear resize: the crop (top, left, height, width) of the previous result, resized to `size` (H, W)."""

    crop: tuple[int, int, int, int]
    size: tuple[int, int]


@dataclass(frozen=True)
class _Axis:
    """Source indices and weights of every output index along one axis, as PyTorch's CPU kernel computes them."""

    i0: torch.Tensor  # (out,) int64
    i1: torch.Tensor
    w0: torch.Tensor  # (out,) float32
    w1: torch.Tensor
    lo: list[int]  # i0 as Python ints (window bounds)
    hi: list[int]  # i1 as Python ints


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, fused: bool) -> torch.Tensor:
    """a * b + c in float32, rounded once (fused multiply-add, via float64) or twice."""
    if fused:
        return (a.double() * b.double() + c.double()).float()
    return a * b + c


def _axis(in_size: int, out_size: int, fused: bool, device: torch.device) -> _Axis:
    """Bilinear (align_corners=False) source indices and weights for out_size outputs from in_size inputs (kept for
    the next call with the same sizes: ~0.1 ms each to build; nothing writes to them)."""
    return _cached_axis(in_size, out_size, fused, str(device))


@functools.lru_cache(maxsize=64)
def _cached_axis(in_size: int, out_size: int, fused: bool, device: str) -> _Axis:
    out = torch.arange(out_size, dtype=torch.float32)
    if in_size == out_size:  # the kernel copies
        i0 = i1 = out.long()
        w1 = torch.zeros(out_size)
    else:
        scale = torch.tensor(in_size, dtype=torch.float32) / out_size
        src = _fma(scale.expand(out_size), out + 0.5, torch.full((out_size,), -0.5), fused).clamp(min=0)
        i0 = src.long().clamp(max=in_size - 1)
        i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
        w1 = (src - i0).clamp(0, 1)
    return _Axis(i0.to(device), i1.to(device), (1 - w1).to(device), w1.to(device), i0.tolist(), i1.tolist())


class _Values:
    """Source of materialised values (N, h, w): windows and exact points."""

    def __init__(self, values: torch.Tensor):
        self.values = values

    def window(self, n: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        return self.values[n, r0:r1, c0:c1]

    def point(self, n: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.values[n, rows, cols]


class _LazyResize:
    """A bilinear resize stage of a source, evaluated only where asked.

    `window` is fast and approximate (separable float32, the kernel's rounding not replayed); `point` replays the
    kernel's arithmetic exactly on the same global indices and weights, for the few pixels whose sign is in doubt.
    """

    def __init__(self, source: _Values | _LazyResize, stage: _Stage, fused: bool, device: torch.device):
        self.source, self.fused = source, fused
        self.top, self.left, height, width = stage.crop
        self.ay = _axis(height, stage.size[0], fused, device)
        self.ax = _axis(width, stage.size[1], fused, device)

    def window(self, n: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        ay, ax = self.ay, self.ax
        lo_r, lo_c = ay.lo[r0], ax.lo[c0]  # indices grow with the output index: first and last bound the window
        src = self.source.window(
            n, self.top + lo_r, self.top + ay.hi[r1 - 1] + 1, self.left + lo_c, self.left + ax.hi[c1 - 1] + 1
        )
        rows = src.index_select(1, ax.i0[c0:c1] - lo_c) * ax.w0[c0:c1]
        rows += src.index_select(1, ax.i1[c0:c1] - lo_c) * ax.w1[c0:c1]  # along x: (source rows, c1 - c0)
        out = rows.index_select(0, ay.i0[r0:r1] - lo_r) * ay.w0[r0:r1, None]
        return out.add_(rows.index_select(0, ay.i1[r0:r1] - lo_r) * ay.w1[r0:r1, None])

    def point(self, n: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        ay, ax, fused = self.ay, self.ax, self.fused
        r0, r1 = ay.i0[rows] + self.top, ay.i1[rows] + self.top
        c0, c1 = ax.i0[cols] + self.left, ax.i1[cols] + self.left
        wx0, wx1 = ax.w0[cols], ax.w1[cols]
        # the kernel interpolates along x within the two source rows, then along y
        upper = _fma(self.source.point(n, r0, c0), wx0, self.source.point(n, r0, c1) * wx1, fused)
        lower = _fma(self.source.point(n, r1, c0), wx0, self.source.point(n, r1, c1) * wx1, fused)
        return _fma(upper, ay.w0[rows], lower * ay.w1[rows], fused)


def _resize(x: torch.Tensor, stage: _Stage) -> torch.Tensor:
    """The reference call: F.interpolate of the crop of x (N, h, w) as one (1, N, h', w') batch -> (N, H, W)."""
    top, left, height, width = stage.crop
    crop = x[None, :, top : top + height, left : left + width]
    return F.interpolate(crop, stage.size, mode="bilinear", align_corners=False)[0]


def _run_full(x: torch.Tensor, stages: Sequence[_Stage]) -> torch.Tensor:
    for stage in stages:
        x = _resize(x, stage)
    return x


def _takes_other_kernel(stage: _Stage, n: int, device: torch.device) -> bool:
    """Whether PyTorch's CPU kernel would use its vectorised channels-last path for this call instead of the generic
    one that the windows replay (small outputs, or 3 channels on one thread)."""
    small = stage.size[0] + stage.size[1] <= 128
    return device.type == "cpu" and (small or (n == 3 and torch.get_num_threads() == 1))


@functools.cache
def _window_mode(device: str) -> bool | None:
    """True / False when exact points with / without fused multiply-add equal F.interpolate on `device`, else None."""
    g = torch.Generator().manual_seed(0)
    cases = [((11, 17), (96, 101)), ((40, 48), (160, 192)), ((150, 90), (101, 77)), ((64, 64), (64, 130))]
    for fused in (True, False):
        matches = True
        for (h, w), size in cases:
            x = torch.randn(1, h, w, generator=g).to(device)
            want = F.interpolate(x[:, None], size, mode="bilinear", align_corners=False)[0, 0]
            grid = torch.meshgrid(*(torch.arange(k, device=x.device) for k in size), indexing="ij")
            try:  # float64 may be missing on some devices
                lazy = _LazyResize(_Values(x), _Stage((0, 0, h, w), size), fused, x.device)
                matches &= torch.equal(lazy.point(0, grid[0].reshape(-1), grid[1].reshape(-1)), want.reshape(-1))
            except (RuntimeError, TypeError):
                return None
        if matches:
            return fused
    return None


def _box_windows(boxes: torch.Tensor, height: int, width: int) -> list[list[int]]:
    """Integer windows [x0, y0, x1, y1) holding exactly the pixels crop_mask keeps; empty for NaN boxes."""
    b = boxes.ceil()
    starts = b[:, :2].nan_to_num(nan=float("inf"))
    ends = b[:, 2:].nan_to_num(nan=0.0)
    limits = b.new_tensor([width, height])
    starts = torch.minimum(starts.clamp(min=0), limits)
    ends = torch.minimum(ends.clamp(min=0), limits)
    return torch.cat((starts, ends), 1).long().tolist()


def _assemble_full(logits: torch.Tensor, stages: Sequence[_Stage], boxes: torch.Tensor | None) -> torch.Tensor:
    """Reference path: resize all of each mask, threshold, crop; in chunks of instances to bound memory."""
    height, width = stages[-1].size
    per_chunk = max(1, _PIXEL_BUDGET // (height * width))
    if any(_takes_other_kernel(s, logits.shape[0], logits.device) for s in stages):
        per_chunk = logits.shape[0]  # that kernel's rounding depends on the channel count: one call, as the reference
    out = []
    for k in range(0, logits.shape[0], per_chunk):
        masks = (_run_full(logits[k : k + per_chunk], stages) > 0).to(torch.uint8)
        out.append(masks if boxes is None else crop_mask(masks, boxes[k : k + per_chunk]))
    return torch.cat(out)


def _assemble(logits: torch.Tensor, stages: Sequence[_Stage], boxes: torch.Tensor | None) -> torch.Tensor:
    """Resize logits (N, h, w) through `stages`, threshold > 0 and crop to boxes (N, 4) in output pixels -> uint8."""
    n = logits.shape[0]
    height, width = stages[-1].size
    if n == 0:
        return torch.zeros((0, height, width), dtype=torch.uint8, device=logits.device)
    fused = _window_mode(str(logits.device))
    if boxes is None or fused is None:
        return _assemble_full(logits, stages, boxes)
    full = [k for k, s in enumerate(stages) if _takes_other_kernel(s, n, logits.device)]
    split = full[-1] + 1 if full else 0  # stages up to the last one taking the other kernel run in full (small)
    source: _Values | _LazyResize = _Values(_run_full(logits, stages[:split]))
    for stage in stages[split:]:
        source = _LazyResize(source, stage, fused, logits.device)
    tolerance = (logits.abs().amax((1, 2)) * _SIGN_TOLERANCE).tolist()
    out = torch.zeros((n, height, width), dtype=torch.uint8, device=logits.device)
    for k, (x0, y0, x1, y1) in enumerate(_box_windows(boxes, height, width)):
        if x1 > x0 and y1 > y0:
            values = source.window(k, y0, y1, x0, x1)
            masks = values > 0
            rows, cols = (values.abs() <= tolerance[k]).nonzero(as_tuple=True)
            if rows.numel():
                masks[rows, cols] = source.point(k, rows + y0, cols + x0) > 0
            out[k, y0:y1, x0:x1] = masks
    return out


def mask_logits(protos: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Mask logits (N, mh, mw) = coeffs (N, c) @ protos (c, mh, mw), in float32 (no sigmoid)."""
    c, mh, mw = protos.shape
    return (coeffs.float() @ protos.float().view(c, -1)).view(-1, mh, mw)


def process_mask(
    protos: torch.Tensor,
    coeffs: torch.Tensor,
    boxes: torch.Tensor,
    shape: Sequence[int],
    upsample: bool = False,
    crop: bool = True,
) -> torch.Tensor:
    """Binary masks from prototypes, at prototype resolution (val) or upsampled to the input (predict) (§5.5).

    Args:
        protos: (c, mh, mw) prototype masks.
        coeffs: (N, c) mask coefficients.
        boxes: (N, 4) xyxy in input pixels (unclipped NMS boxes).
        shape: (H, W) network input size.
        upsample: False: threshold logits > 0 at (mh, mw) and crop with boxes scaled by (mw/W, mh/H).
            True: bilinearly upsample the logits to (H, W) (align_corners=False), threshold > 0, crop with boxes.
        crop: zero pixels outside each box (False keeps the whole mask).
    Returns:
        (N, mh, mw) or (N, H, W) uint8 in {0, 1}.
    """
    _, mh, mw = protos.shape
    height, width = int(shape[0]), int(shape[1])
    logits = mask_logits(protos, coeffs)
    if not upsample:
        masks = logits > 0
        if crop:
            ratios = torch.tensor([mw / width, mh / height, mw / width, mh / height], device=boxes.device)
            masks = crop_mask(masks, boxes.float() * ratios)
        return masks.view(torch.uint8)  # bool -> {0, 1} without a copy
    return _assemble(logits, [_Stage((0, 0, mh, mw), (height, width))], boxes if crop else None)


def native_factor(mh: int, mw: int, h0: int, w0: int) -> int:
    """Upsampling factor f (1, 2 or 4) applied to the logits before scaling them to the original image (§5.5 b)."""
    g = min(4 * mh / h0, 4 * mw / w0)
    pad = (4 * mh - max(round(h0 * g), 1)) | (4 * mw - max(round(w0 * g), 1))
    return 1 if pad % 8 == 0 else 2 if pad % 8 == 4 else 4


def _content_crop(mask_shape: Sequence[int], shape: Sequence[int], ratio_pad: RatioPad = None) -> tuple[int, ...]:
    """(top, left, height, width) of the image content inside letterboxed masks of mask_shape (h, w)."""
    gain_x, gain_y, pad_x, pad_y = letterbox_params(mask_shape, shape, ratio_pad)
    height, width = max(round(shape[0] * gain_y), 1), max(round(shape[1] * gain_x), 1)
    return round(pad_y), round(pad_x), height, width


def process_mask_native(
    protos: torch.Tensor, coeffs: torch.Tensor, boxes: torch.Tensor, shape: Sequence[int], crop: bool = True
) -> torch.Tensor:
    """Binary masks at the original image size (retina_masks, §5.5 b).

    Args:
        protos: (c, mh, mw) prototype masks of a letterboxed input (4 mh, 4 mw).
        coeffs: (N, c) mask coefficients.
        boxes: (N, 4) xyxy in original-image pixels, already scaled and clipped.
        shape: (h0, w0) original image size.
        crop: zero pixels outside each box.
    Returns:
        (N, h0, w0) uint8 in {0, 1}: logits upsampled x f, cropped to the content, resized to (h0, w0), > 0, cropped.
    """
    _, mh, mw = protos.shape
    h0, w0 = int(shape[0]), int(shape[1])
    f = native_factor(mh, mw, h0, w0)
    stages = [_Stage((0, 0, mh, mw), (f * mh, f * mw))] if f > 1 else []
    stages.append(_Stage(_content_crop((f * mh, f * mw), (h0, w0)), (h0, w0)))
    return _assemble(mask_logits(protos, coeffs), stages, boxes if crop else None)


def scale_masks(
    masks: torch.Tensor, shape: Sequence[int], ratio_pad: RatioPad = None, padding: bool = True
) -> torch.Tensor:
    """Resize letterboxed masks (N, h, w) to the original image (h0, w0): crop the content, then bilinear.

    Args:
        masks: (N, h, w) masks or logits (converted to float32).
        shape: (h0, w0) original image size.
        ratio_pad: ((gain_h, gain_w), (pad_left, pad_top)); computed from the shapes when None (§5.5 b step 3).
        padding: whether the content is centred (False: it starts at the top-left corner).
    Returns:
        (N, h0, w0) float32.
    """
    top, left, height, width = _content_crop(masks.shape[1:], shape, ratio_pad)
    if not padding:
        top = left = 0
    x = masks if masks.is_floating_point() else masks.float()
    return _resize(x, _Stage((top, left, height, width), (int(shape[0]), int(shape[1]))))
