"""Task-aligned label assignment (TAL): which anchors learn which ground-truth box, and with what soft score."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..ops.boxes import bbox_iou


def candidates_in_boxes(
    anchor_points: torch.Tensor, gt_bboxes: torch.Tensor, min_side: float = 0.0, eps: float = 1e-9
) -> torch.Tensor:
    """Anchors whose centre lies strictly inside each GT box.

    Args:
        anchor_points: (A, 2) xy pixels.
        gt_bboxes: (B, M, 4) xyxy pixels.
        min_side: GT sides shorter than this are widened about their centre to this length first (so objects
            smaller than a grid cell still get candidate anchors); 0 keeps the boxes as they are.
    Returns:
        (B, M, A) bool.
    """
    if min_side > 0:
        centre = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2
        half = (gt_bboxes[..., 2:] - gt_bboxes[..., :2]).clamp(min=min_side) / 2
        gt_bboxes = torch.cat((centre - half, centre + half), -1)
    x, y = anchor_points[:, 0], anchor_points[:, 1]  # (A,)
    x1, y1, x2, y2 = (c.unsqueeze(-1) for c in gt_bboxes.unbind(-1))  # (B, M, 1) each
    return (x - x1 > eps) & (y - y1 > eps) & (x2 - x > eps) & (y2 - y > eps)


class Assignment(NamedTuple):
    """The assigner's output for a batch of B images with A anchors and nc classes."""

    target_labels: torch.Tensor  # (B, A) int64 class of the assigned GT (meaningless where not fg)
    target_bboxes: torch.Tensor  # (B, A, 4) xyxy pixels of the assigned GT
    target_scores: torch.Tensor  # (B, A, nc) soft one-hot: normalised alignment on the GT class, 0 elsewhere
    fg_mask: torch.Tensor  # (B, A) bool
    target_gt_idx: torch.Tensor  # (B, A) int64 index of the assigned GT in its image's (padded) GT list


class TaskAlignedAssigner(nn.Module):
    """Assign GTs to anchors by the task-aligned metric score^alpha * CIoU^beta (TOOD, Feng et al. 2021).

    For every GT, the `topk` anchors with the largest metric among those whose centre lies inside the GT become
    positives; an anchor claimed by several GTs keeps the one it overlaps most. The target score of a positive is
    its metric normalised so that the best anchor of each GT scores that GT's best IoU.

    The module has no parameters; `forward` runs without gradients. Memory: the largest intermediates are
    (B, M, A) (never (B, M, A, nc)); batches whose B*M*A exceeds `max_elements` are assigned one image at a time.
    """

    def __init__(
        self,
        topk: int = 10,
        num_classes: int = 80,
        alpha: float = 0.5,
        beta: float = 6.0,
        eps: float = 1e-9,
        min_side: float = 0.0,
        max_elements: int = 2**25,
    ):
        super().__init__()
        self.topk = topk
        self.num_classes = num_classes
        self.alpha = alpha
        self.beta = beta
        self.eps = eps
        self.min_side = min_side
        self.max_elements = max_elements

    @torch.no_grad()
    def forward(
        self,
        pd_scores: torch.Tensor,
        pd_bboxes: torch.Tensor,
        anc_points: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_bboxes: torch.Tensor,
        mask_gt: torch.Tensor,
    ) -> Assignment:
        """Assign targets.

        Args:
            pd_scores: (B, A, nc) predicted class probabilities (after sigmoid).
            pd_bboxes: (B, A, 4) predicted boxes, xyxy input pixels.
            anc_points: (A, 2) anchor centres, xy input pixels.
            gt_labels: (B, M, 1) GT classes (padding rows: any value).
            gt_bboxes: (B, M, 4) GT boxes, xyxy input pixels (padding rows: any value).
            mask_gt: (B, M, 1) 1 for real GTs, 0 for padding.
        Returns:
            Assignment(target_labels (B, A), target_bboxes (B, A, 4), target_scores (B, A, nc), fg_mask (B, A) bool,
            target_gt_idx (B, A)).
        """
        batch, num_anchors, _ = pd_scores.shape
        num_gt = gt_bboxes.shape[1]
        if num_gt == 0 or not bool(mask_gt.any()):
            return self._background(pd_scores, gt_bboxes.dtype)
        if batch > 1 and batch * num_gt * num_anchors > self.max_elements:
            parts = [
                self.forward(
                    pd_scores[i : i + 1],
                    pd_bboxes[i : i + 1],
                    anc_points,
                    *(t[i : i + 1] for t in (gt_labels, gt_bboxes, mask_gt)),
                )
                for i in range(batch)
            ]
            return Assignment(*(torch.cat(ts) for ts in zip(*parts)))
        return self._assign(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt)

    def _background(self, pd_scores: torch.Tensor, box_dtype: torch.dtype) -> Assignment:
        batch, num_anchors, _ = pd_scores.shape
        device = pd_scores.device
        return Assignment(
            torch.full((batch, num_anchors), self.num_classes, dtype=torch.long, device=device),
            torch.zeros(batch, num_anchors, 4, dtype=box_dtype, device=device),
            torch.zeros(pd_scores.shape, dtype=torch.promote_types(pd_scores.dtype, torch.float32), device=device),
            torch.zeros(batch, num_anchors, dtype=torch.bool, device=device),
            torch.zeros(batch, num_anchors, dtype=torch.long, device=device),
        )

    def _assign(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt) -> Assignment:
        batch, num_anchors, num_classes = pd_scores.shape
        num_gt = gt_bboxes.shape[1]
        labels = gt_labels.view(batch, num_gt).long().clamp(0, num_classes - 1)
        real = mask_gt.view(batch, num_gt).bool()

        in_gts = candidates_in_boxes(anc_points, gt_bboxes, self.min_side) & real.unsqueeze(-1)  # (B, M, A)
        overlaps, align = self._metrics(pd_scores, pd_bboxes, labels, gt_bboxes, in_gts)

        # Top-k anchors per GT by metric; only candidates inside the GT count. Ranking non-candidates below every
        # candidate makes the choice among zero-metric anchors (CIoU clamped to 0) deterministic: candidates first.
        k = min(self.topk, num_anchors)
        topk_idx = torch.where(in_gts, align, -1.0).topk(k, dim=-1, largest=True).indices  # (B, M, k)
        mask_pos = torch.zeros_like(in_gts).scatter_(-1, topk_idx, True) & in_gts  # (B, M, A)

        # An anchor claimed by several GTs keeps the GT it overlaps most.
        multi = mask_pos.sum(1) > 1  # (B, A)
        if bool(multi.any()):
            best_gt = torch.where(mask_pos, overlaps, -1.0).argmax(1, keepdim=True)  # (B, 1, A) among claimants
            best = torch.zeros_like(mask_pos).scatter_(1, best_gt, True)
            mask_pos = torch.where(multi.unsqueeze(1), best, mask_pos)
        fg_mask = mask_pos.any(1)  # (B, A)
        target_gt_idx = mask_pos.byte().argmax(1)  # (B, A)

        target_labels = labels.gather(1, target_gt_idx)
        target_bboxes = gt_bboxes.gather(1, target_gt_idx.unsqueeze(-1).expand(-1, -1, 4))
        target_scores = torch.zeros(pd_scores.shape, dtype=align.dtype, device=align.device)
        target_scores.scatter_(-1, target_labels.unsqueeze(-1), 1.0)

        # Normalise: the best anchor of each GT gets that GT's best IoU, the others proportionally less.
        align = align * mask_pos
        pos_align_max = align.amax(-1, keepdim=True)  # (B, M, 1)
        pos_overlap_max = (overlaps * mask_pos).amax(-1, keepdim=True)  # (B, M, 1)
        norm = (align * pos_overlap_max / (pos_align_max + self.eps)).amax(1)  # (B, A)
        target_scores = target_scores * (norm * fg_mask).unsqueeze(-1)
        return Assignment(target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx)

    def _metrics(self, pd_scores, pd_bboxes, labels, gt_bboxes, in_gts) -> tuple[torch.Tensor, torch.Tensor]:
        """CIoU (clamped at 0) and alignment metric, computed only at candidate (GT, anchor) pairs.

        Returns two (B, M, A) tensors, zero outside the candidates, in float32 at least (score^alpha * CIoU^beta
        underflows in half precision).
        """
        b, m, a = in_gts.nonzero(as_tuple=True)
        dtype = torch.promote_types(torch.promote_types(pd_scores.dtype, pd_bboxes.dtype), torch.float32)
        overlaps = torch.zeros(in_gts.shape, dtype=dtype, device=pd_bboxes.device)
        align = torch.zeros(in_gts.shape, dtype=dtype, device=pd_scores.device)
        ciou = bbox_iou(gt_bboxes[b, m].to(dtype), pd_bboxes[b, a].to(dtype), xywh=False, CIoU=True)
        ciou = ciou.squeeze(-1).clamp_(0)
        score = pd_scores[b, a, labels[b, m]].to(dtype)  # the predicted probability of the GT's class only
        overlaps[b, m, a] = ciou
        align[b, m, a] = score.pow(self.alpha) * ciou.pow(self.beta)
        return overlaps, align
