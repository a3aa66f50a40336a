"""The head branches a CPU predictor runs only where their outputs are read, with the full forward's values.

A CPU predictor's own model sets `Segment.defer_branches` (`defer_head`), so its forward returns only the class maps
and the level inputs. `DeferredBranches` then runs, bit-identical to the full forward (the scores to a few ulps:
on AVX-512 PyTorch's sigmoid rounds the scalar tail of a tensor apart from its vectorised body):
- the box branch (cv2, ~11% of yolo11n-seg's forward at 640x480) only around the anchors whose best class logit may
  pass `conf`, and decodes only those anchors (`complete_boxes`);
- the mask coefficients (cv4, ~5%) only around the anchors NMS keeps whose masks are computed (`complete_coeffs`);
- the prototypes (~19%) only over the region the kept detections' masks read, on a window per group of nearby
  detections (`_windows`), none for a frame without detections (`protos_for`).

Each runs on a window of its input (`run`) that holds the wanted outputs outside the ring that zero padding changes
at an inner window edge. PyTorch sends a batch-1 convolution whose input holds at most NATIVE_CONV_MAX_VALUES values
to its native kernel instead of oneDNN (a batch of 2 or more always goes to oneDNN), and the two round differently:
a window runs only where it takes the kernel the full forward took, else the image's whole micro-batch is run again.
Windows span at least MIN_WINDOW input pixels each way (or the whole map) and come in steps of WINDOW_STEP: each new
shape costs a oneDNN primitive (a stream's memory grew 13 MB with free sizes).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from ..nn.blocks import Proto
from ..nn.heads import Segment
from ..ops.masks import MASK_READ_MARGIN

NATIVE_CONV_MAX_VALUES = 20480
MIN_WINDOW = 24
WINDOW_STEP = 8
# What one more call costs, in input pixels of work: a micro-batch whose windows, counting this much for each call
# beyond one, would span its maps runs whole, in one call (12 windows of 24x24 on 32x32 maps of the box branch took
# 16.5 ms, the 12 maps in one call 15.5 ms).
WINDOW_CALL_PIXELS = 512
# An image with at most this many detections runs their prototypes on a window per detection, windows merged where
# one over both costs no more (`_windows`); with more, one window over all their masks (a dense scene gains nothing
# from splitting, and the merging grows with the square of the count).
MAX_SPLIT = 8
# The box branch (cv2: two 3x3 convolutions, then a 1x1) changes this many pixels along a window edge inside the map.
BOX_RING = 2
# Anchors whose best class logit is below logit(conf) by more than this cannot pass NMS's conf test: their boxes are
# neither computed nor decoded (a margin far above the rounding of the sigmoid).
SCORE_LOGIT_MARGIN = 1e-2


def defer_head(model: nn.Module) -> str | None:
    """Set the Segment head of `model` (an inference copy) to defer its box, coefficient and prototype branches (see
    `Segment`); the head's module name, or None for a model without one."""
    for name, m in model.named_modules():
        if isinstance(m, Segment):
            m.defer_branches = True
            return name
    return None


class DeferredBranches:
    """Runs the deferred branches of the head `name` of the model that `forward` (an inference.CompiledForward) runs.

    `micro_batch` is the micro-batch of the forward that made the maps (the kernel choice depends on it); `seconds`
    adds up the time spent here, which the predictor reports as inference.
    """

    def __init__(self, forward, name: str):
        self.forward, self.name = forward, name
        self.micro_batch, self.seconds = 1, 0.0
        self._channels: dict[str, int] = {}  # per branch, see run

    def head(self) -> Segment:
        """The Segment head of the model the forward runs (its bf16 copy under bf16)."""
        return self.forward.model.get_submodule(self.name)

    def complete_boxes(self, out: tuple, conf: float) -> tuple[torch.Tensor, tuple]:
        """The deferred head's (class maps, level inputs) -> (y, (P3 features, level inputs)) with the box branch run
        and decoded only for the anchors whose best class logit may pass `conf` (the others' scores fail it: NMS
        never reads them).

        y (B, 4 + nc + 1, K) holds, as the head would decode them, the columns of those anchors only (in anchor
        order; K the most of any image, the rest scoring 0), the last row each column's anchor index, from which
        `complete_coeffs` computes the coefficients of the anchors NMS keeps."""
        class_maps, levels = out
        head, batch = self.head(), class_maps[0].shape[0]
        columns, index, start = [[] for _ in range(batch)], [[] for _ in range(batch)], 0
        for c, box, picks in self._box_levels(class_maps, levels, conf):
            for i, p in enumerate(picks):
                if len(p):
                    columns[i].append(torch.cat((box[i].flatten(1)[:, p].float(), c[i].flatten(1)[:, p].float())))
                    index[i].append(p + start)
            start += c.shape[2] * c.shape[3]
        counts = [sum(len(p) for p in picks) for picks in index]
        x = class_maps[0].new_zeros((batch, head.no, max(counts)), dtype=torch.float32)
        idx = torch.zeros(x.shape[::2], dtype=torch.long, device=x.device)
        for i, n in enumerate(counts):
            if n:
                x[i, :, :n] = torch.cat(columns[i], 1)
                idx[i, :n] = torch.cat(index[i])
        shapes = [c.new_empty((0, 0, *c.shape[2:]), dtype=torch.float32) for c in class_maps]
        anchors, strides = head.anchor_points(shapes)  # (2, A), (1, A)
        y = head.decode_columns(x, anchors[:, idx].transpose(0, 1), strides[:, idx].transpose(0, 1))
        for i, n in enumerate(counts):
            y[i, 4:, n:] = 0  # padding: scores 0 never pass conf
        return torch.cat((y, idx[:, None].to(y.dtype)), 1), (levels[0], levels)

    def complete_all(self, out: tuple, conf: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The deferred head's (class maps, level inputs) -> (y, protos) as the whole head gives them, for TTA, whose
        passes are merged before NMS: y (B, 4 + nc + nm, A) with every anchor's mask coefficients and boxes for the
        anchors that may pass `conf` (zeros elsewhere), the prototypes over the whole map."""
        class_maps, levels = out
        feats = [torch.cat((box.float(), c.float()), 1) for c, box, _ in self._box_levels(class_maps, levels, conf)]
        whole = [[(0, x.shape[2], 0, x.shape[3])] * len(x) for x in levels]  # each level's whole map
        maps = [self.run(f"{self.name}.cv4.{k}", x, whole[k], BOX_RING, 1) for k, x in enumerate(levels)]
        coeffs = torch.cat([m.flatten(2) for m in maps], 2).float()
        protos = self.forward.run_module(f"{self.name}.proto", levels[0])
        return torch.cat((self.head().decode(feats), coeffs), 1), protos

    def _box_levels(self, class_maps: tuple, levels: tuple, conf: float):
        """Per level: (class map (B, nc, h, w), box logits (B, 4 * reg_max, h, w) computed around the anchors whose
        best class logit may pass `conf`, zeros elsewhere, and per image those anchors' flat positions)."""
        floor = -math.inf if conf <= 0 else math.inf if conf >= 1 else math.log(conf / (1 - conf)) - SCORE_LOGIT_MARGIN
        for level, (c, x) in enumerate(zip(class_maps, levels)):
            w = c.shape[3]
            picks = [image.flatten().nonzero().squeeze(1) for image in c.amax(1) > floor]  # (B, h, w) -> anchors
            box = self.run(f"{self.name}.cv2.{level}", x, [_extent(p // w, p % w) for p in picks], BOX_RING, 1)
            if box is None:
                box = c.new_zeros((c.shape[0], 4 * self.head().reg_max, *c.shape[2:]), dtype=torch.float32)
            yield c, box, picks

    def complete_coeffs(
        self, preds: list[torch.Tensor], levels: tuple, wanted: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        """Rows (n, 6 + 1) whose last column is the anchor index -> rows (n, 6 + nm) with the mask coefficients of
        the anchors of the rows `wanted[i]` selects (a bool mask; None: every row), computed around them only (the
        values of the full forward, see `run`); the other rows' coefficients are zeros."""
        nm = self.head().nm
        coeffs = [pred.new_zeros((len(pred), nm)) for pred in preds]
        start = 0
        for level, x in enumerate(levels):
            h, w = x.shape[2:]
            picks, regions = [], []
            for pred, want in zip(preds, wanted):
                a = pred[:, 6].long() - start
                sel = (a >= 0) & (a < h * w)
                if want is not None:
                    sel &= want
                rows, cols = a[sel] // w, a[sel] % w
                picks.append((sel, rows, cols))
                regions.append(_extent(rows, cols))
            start += h * w
            maps = self.run(f"{self.name}.cv4.{level}", x, regions, BOX_RING, 1)
            for i, (sel, rows, cols) in enumerate(picks):
                if len(rows):
                    coeffs[i][sel] = maps[i, :, rows, cols].T.float()
        return [torch.cat((pred[:, :6], c), 1) for pred, c in zip(preds, coeffs)]

    def complete_detections(
        self,
        preds: list[torch.Tensor],
        deferred: tuple,
        shape: tuple[int, int],
        crop: bool = True,
        masked: list[torch.Tensor | None] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """NMS rows (n, 6 + 1) from complete_boxes' y and its (P3 features, level inputs) -> (rows (n, 6 + nm) with
        their mask coefficients, the prototypes under the masks of the rows `masked[i]` selects (a bool mask; None:
        every row), as `protos_for`). Only the masked rows get coefficients (the others' are zeros: no mask of
        theirs is computed)."""
        p3, levels = deferred
        masked = masked or [None] * len(preds)
        preds = self.complete_coeffs(preds, levels, masked)
        return preds, self.protos_for(p3, [p if m is None else p[m] for p, m in zip(preds, masked)], shape, crop)

    def protos_for(
        self, feats: torch.Tensor, preds: list[torch.Tensor], shape: tuple[int, int], crop: bool = True
    ) -> torch.Tensor | None:
        """Prototypes (B, nm, H/4, W/4) from deferred P3 features (B, c, H/8, W/8), each image's computed only over
        the region the masks of its detections read (all of it when the masks are not cropped to their boxes) and
        zeros elsewhere; None when no image has detections."""
        out_hw = (2 * feats.shape[2], 2 * feats.shape[3])
        regions: list = []
        for pred in preds:
            if not len(pred):
                regions.append(None)
            elif not crop:
                regions.append((0, out_hw[0], 0, out_hw[1]))
            elif len(pred) > MAX_SPLIT:
                regions.append(mask_region(pred[:, :4], shape, out_hw))
            else:  # a region per detection: two small objects far apart need not compute the map between them
                regions.append(mask_regions(pred[:, :4], shape, out_hw))
        return self.run(f"{self.name}.proto", feats, regions, Proto.RING, 2)

    def run(self, name: str, x: torch.Tensor, regions: list, ring: int, scale: int) -> torch.Tensor | None:
        """Submodule `name` of the model (a deferred branch) run on `x` (B, c, h, w) so that, per image, its outputs
        in `regions[i]` ((r0, r1, c0, c1) output pixels, output = `scale` x input, or a list of such regions; None:
        none wanted) hold the full forward's values: on windows of the input (`_windows`), or on the image's whole
        micro-batch where a window would take another convolution kernel (NATIVE_CONV_MAX_VALUES) or one call over
        the maps costs less than the micro-batch's windows (WINDOW_CALL_PIXELS). `ring`: output pixels along an inner
        window edge that zero padding changes. Returns (B, c_out, scale*h, scale*w), zeros outside what was computed;
        None if nothing was wanted."""
        t = time.perf_counter()
        batch, _, h, w = x.shape
        if name not in self._channels:  # the fewest input channels of its convolutions: PyTorch's kernel choice
            module = self.forward.model.get_submodule(name)
            convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
            self._channels[name] = min(m.in_channels for m in convs)
        channels = self._channels[name]
        min_area = NATIVE_CONV_MAX_VALUES // channels + 1  # a smaller window would take the native kernel
        step = self.micro_batch
        chunks: dict[int, list[tuple[int, tuple[int, int, int, int]]]] = {}  # micro-batch -> (image, window)s
        whole: set[int] = set()  # micro-batches to run whole
        for i, region in enumerate(regions):
            if region is None:
                continue
            k = i // step
            windows = _windows(region if isinstance(region, list) else [region], ring, scale, (h, w), min_area)
            if (min(step, batch - k * step) == 1 and h * w < min_area) or any(  # alone in its micro-batch: native
                (y1 - y0) * (x1 - x0) < min_area or (y1 - y0, x1 - x0) == (h, w) for y0, y1, x0, x1 in windows
            ):
                whole.add(k)
            chunks.setdefault(k, []).extend((i, window) for window in windows)
        out: torch.Tensor | None = None
        for k, windows in chunks.items():
            chunk = slice(k * step, min((k + 1) * step, batch))
            area = sum(_area(window) for _, window in windows)
            area += (len(windows) - 1) * WINDOW_CALL_PIXELS  # the calls beyond the one a whole run makes
            if k in whole or area >= (chunk.stop - chunk.start) * h * w:  # one call over the maps costs less
                part = self.forward.run_module(name, x[chunk])
                if out is None:
                    out = part.new_zeros((batch, *part.shape[1:]))
                out[chunk] = part
                continue
            for i, (y0, y1, x0, x1) in windows:  # overlapping windows write the same values twice
                part = self.forward.run_module(name, x[i : i + 1, :, y0:y1, x0:x1])
                if out is None:
                    out = part.new_zeros((batch, part.shape[1], scale * h, scale * w))
                # all but the ring along the window's edges inside the map
                r0, c0 = scale * y0 + (ring if y0 else 0), scale * x0 + (ring if x0 else 0)
                r1, c1 = scale * y1 - (ring if y1 < h else 0), scale * x1 - (ring if x1 < w else 0)
                out[i, :, r0:r1, c0:c1] = part[
                    0, :, r0 - scale * y0 : r1 - scale * y0, c0 - scale * x0 : c1 - scale * x0
                ]
        self.seconds += time.perf_counter() - t
        return out


def _area(window: tuple[int, int, int, int]) -> int:
    return (window[1] - window[0]) * (window[3] - window[2])


def _windows(
    regions: list[tuple[int, int, int, int]], ring: int, scale: int, hw: tuple[int, int], min_area: int
) -> list[tuple[int, int, int, int]]:
    """The input windows (see input_window) for output `regions` of one image: the regions, largest window first,
    each joined to the first group whose window grows by no more than its own window and a call's cost
    (WINDOW_CALL_PIXELS), grown groups joined alike; one window over all where that spans no more than the groups'
    windows and their calls."""
    if len(regions) == 1:
        return [input_window(regions[0], ring, scale, hw, min_area)]
    groups: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = []  # (region, window)
    pending = [(r, input_window(r, ring, scale, hw, min_area)) for r in regions]
    pending.sort(key=lambda rw: -_area(rw[1]))
    while pending:
        region, window = pending.pop(0)
        for k, (group, group_window) in enumerate(groups):
            joined = _bounding([group, region])
            joined_window = input_window(joined, ring, scale, hw, min_area)
            if _area(joined_window) <= _area(group_window) + _area(window) + WINDOW_CALL_PIXELS:
                del groups[k]
                pending.insert(0, (joined, joined_window))  # the grown group may now take in another
                break
        else:
            groups.append((region, window))
    whole = input_window(_bounding(regions), ring, scale, hw, min_area)
    if _area(whole) <= sum(_area(w) for _, w in groups) + (len(groups) - 1) * WINDOW_CALL_PIXELS:
        return [whole]
    return [window for _, window in groups]


def _bounding(regions: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """The smallest (r0, r1, c0, c1) holding all of `regions`."""
    return (
        min(r[0] for r in regions),
        max(r[1] for r in regions),
        min(r[2] for r in regions),
        max(r[3] for r in regions),
    )


def _extent(rows: torch.Tensor, cols: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1): the smallest region holding the positions (rows[k], cols[k]); None for no positions."""
    if not len(rows):
        return None
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def mask_region(boxes: torch.Tensor, shape: tuple[int, int], proto_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): the prototype pixels (of a proto_hw map for input `shape`) that the masks of `boxes` (N, 4)
    xyxy in input pixels read, clipped to the map; all of it for non-finite boxes."""
    rows = _mask_region_rows(boxes, shape, proto_hw)
    return int(rows[:, 0].min()), int(rows[:, 1].max()), int(rows[:, 2].min()), int(rows[:, 3].max())


def mask_regions(
    boxes: torch.Tensor, shape: tuple[int, int], proto_hw: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """`mask_region` of each of `boxes` (N, 4) on its own."""
    return [tuple(int(v) for v in row) for row in _mask_region_rows(boxes, shape, proto_hw)]


def _mask_region_rows(boxes: torch.Tensor, shape: tuple[int, int], proto_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) rows (r0, r1, c0, c1): each box's mask region (see mask_region), in one float64 pass; whole maps for
    non-finite boxes."""
    if not bool(torch.isfinite(boxes).all()):
        return np.tile(np.array([0, proto_hw[0], 0, proto_hw[1]], np.int64), (len(boxes), 1))
    b = boxes.detach().cpu().double().numpy()
    cols = []
    for axis, (size, f) in enumerate(zip(shape, proto_hw)):  # y (box columns 1 and 3), then x (0 and 2)
        per_proto = size / f  # input pixels per prototype pixel
        p0 = np.floor(b[:, 1 - axis] / per_proto) - MASK_READ_MARGIN
        p1 = np.ceil(b[:, 3 - axis] / per_proto) + MASK_READ_MARGIN
        cols += [np.clip(p0, 0, f), np.clip(p1, 0, f)]
    return np.stack(cols, 1).astype(np.int64)


def input_window(
    region: tuple[int, int, int, int], ring: int, scale: int, hw: tuple[int, int], min_area: int = 0
) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the window of an (h, w) input whose outputs (`scale` x the input) hold `region` outside the
    `ring`, at least MIN_WINDOW each way and in steps of WINDOW_STEP, within the map, grown along its shorter side
    until it spans `min_area` pixels or the whole map."""
    spans = [
        (max((o0 - ring) // scale, 0), min(-(-(o1 + ring) // scale), f))
        for (o0, o1), f in zip((region[:2], region[2:]), hw)
    ]
    sizes = [
        min(max(MIN_WINDOW, -(-max(w1 - w0, 1) // WINDOW_STEP) * WINDOW_STEP), f) for (w0, w1), f in zip(spans, hw)
    ]
    while sizes[0] * sizes[1] < min_area and sizes != list(hw):
        k = 0 if sizes[1] == hw[1] or (sizes[0] < hw[0] and sizes[0] <= sizes[1]) else 1
        sizes[k] = min(sizes[k] + WINDOW_STEP, hw[k])
    window = []
    for (w0, w1), size, f in zip(spans, sizes, hw):
        short = size - (w1 - w0)
        if short > 0:  # grow it about its centre, within the map
            w0 = max(min(w0 - short // 2, f - size), 0)
            w1 = w0 + size
        window += [w0, w1]
    return tuple(window)
