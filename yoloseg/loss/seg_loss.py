"""Training losses: detection (CIoU box + DFL + BCE class) and segmentation (detection + prototype-mask BCE).

`DetectionLoss` and `SegmentationLoss` are callables `loss(preds, batch) -> (total, items)` where `total` is the sum
of the gained components times the batch size (what the trainer back-propagates) and `items` the detached gained
components (what the trainer logs; the incumbent's `box_loss`, `seg_loss`, `cls_loss`, `dfl_loss` columns).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..data.sample import Batch
from ..ops.anchors import bbox2dist, dist2bbox, make_anchors
from ..ops.boxes import bbox_iou, xywh2xyxy
from .assigner import Assignment, TaskAlignedAssigner


class Targets(NamedTuple):
    """A batch's instances padded per image to M = the most instances in any image."""

    labels: torch.Tensor  # (B, M, 1) float class ids
    bboxes: torch.Tensor  # (B, M, 4) xyxy input pixels
    mask: torch.Tensor  # (B, M, 1) float, 1 for real instances, 0 for padding
    instance_index: torch.Tensor  # (B, M) int64 row of each instance in the batch's flat lists, -1 for padding


def build_targets(
    batch_idx: torch.Tensor,
    classes: torch.Tensor,
    boxes_xywhn: torch.Tensor,
    batch_size: int,
    image_hw: tuple[int, int],
) -> Targets:
    """Pad the flat instance lists per image; instance m of image b is its m-th instance in batch order.

    Args:
        batch_idx: (N,) image index of each instance. classes: (N,) class ids.
        boxes_xywhn: (N, 4) xywh normalised to the network input of size `image_hw` (h, w).
    """
    device = boxes_xywhn.device
    batch_idx = batch_idx.view(-1).long().to(device)
    n = batch_idx.numel()
    counts = torch.bincount(batch_idx, minlength=batch_size)
    m = int(counts.max()) if n else 0
    order = torch.argsort(batch_idx, stable=True)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(batch_idx)
    rank[order] = torch.arange(n, device=device) - starts[batch_idx[order]]  # position within its own image

    h, w = image_hw
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
    labels = torch.zeros(batch_size, m, 1, device=device)
    bboxes = torch.zeros(batch_size, m, 4, device=device)
    mask = torch.zeros(batch_size, m, 1, device=device)
    instance_index = torch.full((batch_size, m), -1, dtype=torch.long, device=device)
    labels[batch_idx, rank, 0] = classes.view(-1).float().to(device)
    bboxes[batch_idx, rank] = xywh2xyxy(boxes_xywhn.float().view(-1, 4) * scale)
    mask[batch_idx, rank] = 1.0
    instance_index[batch_idx, rank] = torch.arange(n, device=device)
    return Targets(labels, bboxes, mask, instance_index)


def decode_dfl(pred_dist: torch.Tensor, reg_max: int) -> torch.Tensor:
    """(B, A, 4*reg_max) DFL logits -> (B, A, 4) expected ltrb distances in grid units (softmax · [0..reg_max-1])."""
    b, a, _ = pred_dist.shape
    bins = torch.arange(reg_max, dtype=pred_dist.dtype, device=pred_dist.device)
    return pred_dist.view(b, a, 4, reg_max).softmax(3) @ bins


def dfl_loss(pred_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: cross-entropy to the two bins around each target distance, linearly weighted.

    Args:
        pred_dist: (n, 4, reg_max) logits. target: (n, 4) distances in [0, reg_max - 1).
    Returns:
        (n,) the loss averaged over the 4 sides.
    """
    reg_max = pred_dist.shape[-1]
    left = target.long()
    right = left + 1
    weight_left = right - target
    logits = pred_dist.reshape(-1, reg_max)
    ce_left = F.cross_entropy(logits, left.view(-1), reduction="none").view(left.shape)
    ce_right = F.cross_entropy(logits, right.view(-1), reduction="none").view(left.shape)
    return (ce_left * weight_left + ce_right * (1 - weight_left)).mean(-1)


def box_and_dfl_loss(
    pred_dist: torch.Tensor,
    pred_bboxes: torch.Tensor,
    anchor_points: torch.Tensor,
    target_bboxes: torch.Tensor,
    fg_mask: torch.Tensor,
    target_scores: torch.Tensor,
    target_scores_sum: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 - CIoU) and DFL losses over the positives, each weighted by the positive's target score.

    Args:
        pred_dist: (B, A, 4*reg_max) DFL logits. pred_bboxes: (B, A, 4) decoded xyxy, grid units.
        anchor_points: (A, 2) grid units. target_bboxes: (B, A, 4) xyxy grid units. fg_mask: (B, A) bool.
        target_scores: (B, A, nc). target_scores_sum: scalar normaliser (at least 1).
    Returns:
        (box loss, DFL loss), un-gained scalars; zeros still attached to the graph when there are no positives.
    """
    if not bool(fg_mask.any()):  # keep the outputs in the graph (DDP needs a gradient for each parameter)
        zero = pred_dist.sum() * 0.0
        return zero, zero
    reg_max = pred_dist.shape[-1] // 4
    weight = target_scores.sum(-1)[fg_mask].unsqueeze(-1)  # (n, 1)
    iou = bbox_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, CIoU=True)  # (n, 1)
    box = ((1.0 - iou) * weight).sum() / target_scores_sum
    target_ltrb = bbox2dist(anchor_points, target_bboxes, reg_max - 1)  # clamped to reg_max - 1.01
    dfl = dfl_loss(pred_dist[fg_mask].view(-1, 4, reg_max), target_ltrb[fg_mask]).unsqueeze(-1)
    return box, (dfl * weight).sum() / target_scores_sum


def crop_windows(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rectangle of pixels a box crop keeps: pixel (x, y) is kept when x1 <= x < x2 and y1 <= y < y2.

    Args:
        boxes: (n, 4) xyxy in pixels of a (height, width) map.
    Returns:
        start (n, 2) xy of the first kept pixel and size (n, 2) wh of the rectangle, int64, within the map and at least
        1×1 (a crop that keeps nothing gets a 1×1 window whose pixel the loss masks out).
    """
    limit = boxes.new_tensor([width, height])
    start = torch.minimum(boxes[:, :2].ceil().clamp(min=0), limit)
    stop = torch.minimum(boxes[:, 2:].ceil().clamp(min=0), limit)
    size = (stop - start).clamp(min=1)
    return start.long(), size.long()


def plan_chunks(sizes: list[tuple[int, int]], per_pixel: int, budget: int) -> list[tuple[int, int, int, int]]:
    """Split positives (sorted by window area, largest first) into chunks of about `budget` gathered elements.

    Args:
        sizes: per positive, its window (w, h). per_pixel: elements gathered per window pixel.
    Returns:
        (start, stop, window_w, window_h) per chunk; every window of the chunk fits in window_w × window_h.
    """
    chunks: list[tuple[int, int, int, int]] = []
    start, max_w, max_h = 0, 0, 0
    for i, (w, h) in enumerate(sizes):
        new_w, new_h = max(max_w, w), max(max_h, h)
        if i > start and (i + 1 - start) * new_w * new_h * per_pixel > budget:
            chunks.append((start, i, max_w, max_h))
            start, new_w, new_h = i, w, h
        max_w, max_h = new_w, new_h
    if sizes:
        chunks.append((start, len(sizes), max_w, max_h))
    return chunks


class _DetectionTerms(NamedTuple):
    box: torch.Tensor  # scalar, un-gained
    cls: torch.Tensor
    dfl: torch.Tensor
    assignment: Assignment
    targets: Targets
    image_hw: tuple[int, int]


class DetectionLoss:
    """Box (CIoU), class (BCE vs task-aligned soft targets) and DFL losses of an anchor-free YOLO detect head.

    Args:
        model: the network; its head `model.model[-1]` gives nc, reg_max and the strides.
        box, cls, dfl: gains.
        tal_topk: positives per GT in the assigner.
        tal_min_side: GT sides shorter than this (pixels) are widened to it when choosing candidate anchors; None
            means the middle stride (16), as the incumbent 8.4 does; 0 means strictly inside the box.
    """

    def __init__(
        self,
        model: nn.Module,
        box: float = 7.5,
        cls: float = 0.5,
        dfl: float = 1.5,
        tal_topk: int = 10,
        tal_min_side: float | None = None,
    ):
        head = model.model[-1]
        self.nc = int(head.nc)
        self.reg_max = int(head.reg_max)
        self.stride = [float(s) for s in head.stride]
        self.box_gain, self.cls_gain, self.dfl_gain = box, cls, dfl
        if tal_min_side is None:
            tal_min_side = self.stride[min(1, len(self.stride) - 1)]
        self.assigner = TaskAlignedAssigner(
            topk=tal_topk, num_classes=self.nc, alpha=0.5, beta=6.0, min_side=tal_min_side
        )

    def __call__(self, preds, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """preds: the train-mode head output (the level maps, or a tuple whose first item is the level maps).

        Returns (sum of gained [box, cls, dfl] × batch size, the detached gained (3,) components).
        """
        feats = list(preds) if isinstance(preds[0], torch.Tensor) else preds[0]
        terms = self.detection_terms(feats, batch)
        loss = torch.stack((terms.box * self.box_gain, terms.cls * self.cls_gain, terms.dfl * self.dfl_gain))
        return loss.sum() * feats[0].shape[0], loss.detach()

    def detection_terms(self, feats: list[torch.Tensor], batch: Batch) -> _DetectionTerms:
        """Assign targets and compute the un-gained box, class and DFL losses."""
        batch_size = feats[0].shape[0]
        no = feats[0].shape[1]
        pred_dist, pred_logits = torch.cat([f.view(batch_size, no, -1) for f in feats], 2).split(
            (4 * self.reg_max, self.nc), 1
        )
        # The loss is computed in float32 whatever the head's precision (anchor coordinates such as 159.5 are not
        # representable in bfloat16, and the assigner's metric underflows in half precision).
        pred_dist = pred_dist.permute(0, 2, 1).float()  # (B, A, 4*reg_max)
        pred_logits = pred_logits.permute(0, 2, 1).float()  # (B, A, nc)
        shapes = [f.new_empty((0, 0, *f.shape[2:]), dtype=torch.float32) for f in feats]  # only sizes matter
        anchor_points, stride_tensor = make_anchors(shapes, self.stride, 0.5)  # (A, 2) grid units, (A, 1)

        image_hw = (int(batch.images.shape[-2]), int(batch.images.shape[-1]))
        targets = build_targets(
            batch.batch_idx.to(pred_logits.device),
            batch.classes.to(pred_logits.device),
            batch.boxes_xywhn.to(pred_logits.device),
            batch_size,
            image_hw,
        )
        pred_bboxes = dist2bbox(decode_dfl(pred_dist, self.reg_max), anchor_points, xywh=False)  # (B, A, 4) grid
        assignment = self.assigner(
            pred_logits.detach().sigmoid(),
            (pred_bboxes.detach() * stride_tensor).to(targets.bboxes.dtype),
            anchor_points * stride_tensor,
            targets.labels,
            targets.bboxes,
            targets.mask,
        )
        target_scores = assignment.target_scores
        target_scores_sum = target_scores.sum().clamp(min=1)
        cls_loss = F.binary_cross_entropy_with_logits(pred_logits, target_scores, reduction="sum")
        box_loss, dfl = box_and_dfl_loss(
            pred_dist,
            pred_bboxes,
            anchor_points,
            assignment.target_bboxes / stride_tensor,
            assignment.fg_mask,
            target_scores,
            target_scores_sum,
        )
        return _DetectionTerms(box_loss, cls_loss / target_scores_sum, dfl, assignment, targets, image_hw)


class SegmentationLoss(DetectionLoss):
    """Detection losses plus the instance-mask loss of a prototype-mask (YOLACT-style) segmentation head.

    Args:
        model, box, cls, dfl, tal_topk, tal_min_side: as `DetectionLoss`; the mask loss uses the `box` gain, as the
            incumbent does.
        overlap: the batch's masks are per-image index maps (B, h, w) rather than per-instance binary masks.
        max_elements: the mask loss gathers prototype pixels in chunks of about this many elements; when it needs
            more than one chunk, each is recomputed in the backward pass instead of being stored, which bounds memory
            for hundreds of positives.
    """

    def __init__(
        self,
        model: nn.Module,
        box: float = 7.5,
        cls: float = 0.5,
        dfl: float = 1.5,
        overlap: bool = True,
        tal_topk: int = 10,
        tal_min_side: float | None = None,
        max_elements: int = 2**24,
    ):
        super().__init__(model, box, cls, dfl, tal_topk, tal_min_side)
        self.nm = int(model.model[-1].nm)
        self.overlap = overlap
        self.max_elements = max_elements

    def __call__(self, preds, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """preds: (feats, mask_coefficients (B, nm, A), protos (B, nm, H/4, W/4)) from the train-mode head.

        Returns (sum of gained [box, seg, cls, dfl] × batch size, the detached gained (4,) components).
        """
        feats, mask_coefficients, protos = preds
        terms = self.detection_terms(feats, batch)
        seg = self.mask_loss(mask_coefficients, protos, terms, batch)
        loss = torch.stack(
            (terms.box * self.box_gain, seg * self.box_gain, terms.cls * self.cls_gain, terms.dfl * self.dfl_gain)
        )
        return loss.sum() * protos.shape[0], loss.detach()

    def mask_loss(
        self, mask_coefficients: torch.Tensor, protos: torch.Tensor, terms: _DetectionTerms, batch: Batch
    ) -> torch.Tensor:
        """Mean over positive anchors of the box-cropped, area-normalised BCE of (coefficients · protos) vs GT mask."""
        fg = terms.assignment.fg_mask
        b_idx, a_idx = fg.nonzero(as_tuple=True)  # (P,), sorted by image
        num_pos = b_idx.numel()
        if num_pos == 0:
            return protos.sum() * 0.0 + mask_coefficients.sum() * 0.0
        batch_size, nm, mh, mw = protos.shape
        h, w = terms.image_hw
        gt_idx = terms.assignment.target_gt_idx[b_idx, a_idx]  # (P,) the GT's index within its image
        coefs = mask_coefficients[b_idx, :, a_idx]  # (P, nm)

        # The positives of one GT (up to topk) share its box, crop window, area and mask: group them so that the
        # prototypes of a window are gathered once per GT, and its logits come from one small matrix product.
        key = b_idx * terms.targets.bboxes.shape[1] + gt_idx
        _, group, counts = torch.unique(key, return_inverse=True, return_counts=True)  # group: (P,) in 0..G-1
        by_group = torch.argsort(group, stable=True)
        first = counts.cumsum(0) - counts  # (G,) position of each group's first positive in by_group
        rank = torch.empty_like(group)
        rank[by_group] = torch.arange(num_pos, device=group.device) - first[group[by_group]]
        n_groups, per_group = len(counts), int(counts.max())
        coefs_g = coefs.new_zeros(n_groups, per_group, nm).index_put((group, rank), coefs)  # (G, C, nm), 0-padded
        valid = torch.zeros(n_groups, per_group, dtype=torch.bool, device=coefs.device)
        valid[group, rank] = True
        lead = by_group[first]  # (G,) one positive of each group
        g_b, g_gt = b_idx[lead], gt_idx[lead]
        boxes_px = terms.assignment.target_bboxes[g_b, a_idx[lead]]  # (G, 4) xyxy input pixels
        boxes = boxes_px * boxes_px.new_tensor([mw / w, mh / h, mw / w, mh / h])  # mask pixels
        areas = (boxes_px[:, 2] - boxes_px[:, 0]) * (boxes_px[:, 3] - boxes_px[:, 1]) / (w * h)
        gt_source = self._gt_source(batch, terms.targets, mh, mw, protos.device)
        # (B*mh*mw, nm): one row per pixel; windows are gathered with index_select, whose backward (index_add) is
        # ~10x faster on a CPU than that of advanced indexing (a sorted, deterministic index_put)
        protos_rows = protos.view(batch_size, nm, mh * mw).transpose(1, 2).reshape(batch_size * mh * mw, nm)

        # The loss is zero outside each box, so only the pixels of its crop window are computed. Groups are
        # chunked by window size into chunks of bounded size; with several chunks, each is recomputed in the
        # backward pass instead of keeping its gathered prototypes alive.
        start, size = crop_windows(boxes, mh, mw)
        order = (size[:, 0] * size[:, 1]).argsort(descending=True)
        chunks = plan_chunks([tuple(s) for s in size[order].tolist()], nm + 3 * per_group, self.max_elements)
        recompute = torch.is_grad_enabled() and len(chunks) > 1
        total = protos.new_zeros(())
        for first_i, stop, win_w, win_h in chunks:
            i = order[first_i:stop]
            args = (
                coefs_g[i],
                valid[i],
                protos_rows,
                g_b[i],
                start[i],
                (win_w, win_h),
                boxes[i],
                areas[i],
                gt_source,
                g_gt[i],
                (mh, mw),
            )
            total = total + (checkpoint(_window_loss, *args, use_reentrant=False) if recompute else _window_loss(*args))
        return total / num_pos

    def _gt_source(self, batch: Batch, targets: Targets, mh: int, mw: int, device: torch.device) -> _GTMasks:
        masks = batch.masks.to(device)
        if self.overlap and masks.shape[-2:] == (mh, mw):
            return _GTMasks(masks.view(masks.shape[0], mh * mw), None)
        if self.overlap:  # index maps at another resolution: per-instance binary masks first, then resize
            b, m = (targets.instance_index >= 0).nonzero(as_tuple=True)
            masks = torch.zeros(len(b), *masks.shape[-2:], device=device).index_copy_(
                0, targets.instance_index[b, m], (masks[b] == (m + 1).view(-1, 1, 1)).float()
            )  # (N, h, w) in the order of the batch's flat instance lists
        if masks.shape[-2:] != (mh, mw):
            masks = F.interpolate(masks[None].float(), (mh, mw), mode="bilinear", align_corners=False)[0]
        return _GTMasks(masks.reshape(masks.shape[0], mh * mw), targets.instance_index)


class _GTMasks(NamedTuple):
    """GT masks at mask resolution, flattened: index maps (B, mh*mw) with `instance_index` None, else per-instance
    masks (N, mh*mw) addressed through `instance_index` (B, M)."""

    masks: torch.Tensor
    instance_index: torch.Tensor | None

    def select(self, b_idx: torch.Tensor, gt_idx: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(n,) image and GT index, (n, K) flat pixel indices -> (n, K) float mask values there."""
        if self.instance_index is None:
            return (self.masks[b_idx.unsqueeze(-1), pixels] == (gt_idx + 1).unsqueeze(-1)).float()
        return self.masks[self.instance_index[b_idx, gt_idx].unsqueeze(-1), pixels].float()


def _window_loss(
    coefs, valid, protos_rows, b_idx, start, window, boxes, areas, gt_source, gt_idx, mask_hw
) -> torch.Tensor:
    """Sum over the positives of n GTs of the box-cropped BCE(coefs · protos, gt mask) / (mh*mw) / normalised box area.

    Args:
        coefs: (n, C, nm) coefficients of up to C positives per GT, `valid` (n, C) marks the real ones.
        protos_rows: (B*mh*mw, nm), a row per pixel of each image. b_idx: (n,) image of each GT. start: (n, 2) xy
        of its crop window; window: (w, h) size shared by the chunk. boxes: (n, 4) xyxy mask pixels. areas: (n,)
        box area / image area. gt_source: the GT masks; gt_idx: (n,) the GT's index within its image.
        mask_hw: (mh, mw).
    """
    (win_w, win_h), (mh, mw) = window, mask_hw
    start = torch.minimum(start, start.new_tensor([mw - win_w, mh - win_h]))  # a shared-size window stays on the map
    xs = start[:, :1] + torch.arange(win_w, device=start.device)  # (n, win_w)
    ys = start[:, 1:] + torch.arange(win_h, device=start.device)  # (n, win_h)
    pixels = (ys.unsqueeze(-1) * mw + xs.unsqueeze(1)).flatten(1)  # (n, K) flat indices, K = win_h * win_w
    rows = (b_idx.unsqueeze(-1) * (mh * mw) + pixels).flatten()
    window_protos = protos_rows.index_select(0, rows).view(len(pixels), pixels.shape[1], -1)  # (n, K, nm)
    logits = torch.bmm(coefs, window_protos.transpose(1, 2)).float()  # (n, C, K)
    target = gt_source.select(b_idx, gt_idx, pixels).unsqueeze(1).expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    x1, y1, x2, y2 = (c.unsqueeze(-1) for c in boxes.unbind(-1))
    inside = (((ys >= y1) & (ys < y2)).unsqueeze(-1) & ((xs >= x1) & (xs < x2)).unsqueeze(1)).flatten(1)  # (n, K)
    per_mask = (bce * inside.unsqueeze(1)).sum(-1) / (mh * mw)  # (n, C) the mean over the map of the cropped loss
    return (per_mask * valid / areas.clamp(min=1e-9).unsqueeze(-1)).sum()
