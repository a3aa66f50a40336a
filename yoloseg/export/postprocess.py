"""Post-processing that can live inside an exported graph: NMS (`nms=True`) and mask assembly (`masks=True`).

NMS uses the ONNX `NonMaxSuppression` operator (greedy, suppress when IoU > iou, keep when score > conf; ONNX
Runtime and OpenVINO both implement it) through a `torch.autograd.Function` with an ONNX `symbolic`. Its eager
forward runs the same greedy algorithm in torch, so the wrapper also works (slowly) in PyTorch. Everything around
the operator is fixed-shape tensor code: the class-aware offset, a scatter of the kept indices into a (B, A) mask,
and a top-k of `max_det` rows by score. Semantics match `ops.nms.non_max_suppression` in predict mode: one label
per anchor (the best class, ties to the first), class-aware unless `agnostic`, no 30,000-candidate cap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """Greedy NMS on (N, 4) xyxy boxes: kept indices in descending score order (stable; IoU > thr suppresses)."""
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(1)
        suppressed |= inter / (areas[i] + areas - inter) > iou_thres
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


class NonMaxSuppressionOp(torch.autograd.Function):
    """ONNX NonMaxSuppression (center_point_box=0): boxes (B, N, 4) corners, scores (B, C, N) ->
    selected (M, 3) int64 rows (batch, class, box); at most `max_output` boxes per batch and class."""

    @staticmethod
    def forward(ctx, boxes, scores, max_output, iou_threshold, score_threshold):
        rows = []
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                idx = (scores[b, c] > float(score_threshold)).nonzero().flatten()
                keep = _greedy_nms(boxes[b, idx].float(), scores[b, c, idx].float(), float(iou_threshold))
                sel = idx[keep[: int(max_output)]]
                rows.append(torch.stack((torch.full_like(sel, b), torch.full_like(sel, c), sel), 1))
        return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.long, device=boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_output, iou_threshold, score_threshold):
        return g.op(
            "NonMaxSuppression", boxes, scores, max_output, iou_threshold, score_threshold, center_point_box_i=0
        )


def nms_in_graph(
    y: torch.Tensor,
    nc: int,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    agnostic: bool = False,
    max_wh: float = 7680.0,
) -> torch.Tensor:
    """Raw head output -> detections after NMS, padded with zero rows.

    Args:
        y: (B, 4 + nc + nm, A): xywh in input pixels, class scores, nm mask coefficients.
    Returns:
        (B, max_det, 6 + nm): x1 y1 x2 y2 conf cls coeffs..., by descending conf; rows past the kept ones are 0.
    """
    nm = y.shape[1] - 4 - nc
    y = y.transpose(1, 2)  # (B, A, 4 + nc + nm)
    xywh, scores = y[..., :4], y[..., 4 : 4 + nc]
    score, cls = scores.max(-1)  # (B, A): best class, first on ties
    xyxy = torch.cat((xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2), -1)
    cls_f = cls.unsqueeze(-1).to(xyxy.dtype)
    nms_boxes = xyxy.float() if agnostic else xyxy.float() + cls_f.float() * max_wh  # fp32: fp16 overflows here
    selected = NonMaxSuppressionOp.apply(
        nms_boxes,
        score.float().unsqueeze(1),
        torch.tensor([max_det], dtype=torch.long),
        torch.tensor([iou], dtype=torch.float32),
        torch.tensor([conf], dtype=torch.float32),
    )  # (M, 3): batch, class (always 0), anchor
    # kept mask over the flattened (B * A) anchors plus one dump slot for padding rows (-1) some runtimes emit
    flat_score = score.flatten()
    slots = torch.cat((flat_score, flat_score[:1]))  # (B*A + 1,)
    n_anchors = score.shape[1]
    b, a = selected[:, 0], selected[:, 2]
    index = torch.where(b >= 0, b * n_anchors + a, torch.full_like(b, -1) + slots.shape[0])
    kept = torch.zeros_like(slots).scatter(0, index, torch.ones_like(index, dtype=slots.dtype))[:-1]
    ranked = torch.where(kept.view_as(score) > 0, score, -torch.ones_like(score))  # (B, A); -1 = dropped
    rows = [xyxy, score.unsqueeze(-1), cls_f]
    if nm:
        rows.append(y[..., 4 + nc :])
    rows = torch.cat(rows, -1)  # (B, A, 6 + nm)
    # pad the anchor axis by max_det dropped rows so top-k of max_det is valid for any input size
    ranked = torch.cat((ranked, -torch.ones_like(ranked[:, :1]).expand(-1, max_det)), 1)
    rows = torch.cat((rows, torch.zeros_like(rows[:, :1]).expand(-1, max_det, -1)), 1)
    top, idx = ranked.topk(max_det, 1)  # (B, max_det), descending
    dets = rows.gather(1, idx.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))
    return dets * (top >= 0).unsqueeze(-1).to(dets.dtype)


def masks_in_graph(dets: torch.Tensor, protos: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Predict-mode masks for NMS output: coefficients @ prototypes, bilinear upsample to the input size,
    > 0, then keep only pixels inside the (unclipped) box: column i when x1 <= i < x2, row j when y1 <= j < y2.

    Args:
        dets: (B, N, 6 + nm) from `nms_in_graph`; protos: (B, nm, mh, mw); shape: the input (H, W).
    Returns:
        (B, N, H, W) uint8 in {0, 1}; zero rows of `dets` give empty masks.
    """
    b, nm = protos.shape[0], protos.shape[1]
    coeffs = dets[..., 6:]  # (B, N, nm)
    logits = coeffs.float() @ protos.float().reshape(b, nm, -1)  # (B, N, mh*mw)
    logits = logits.reshape(b, -1, protos.shape[2], protos.shape[3])  # (B, N, mh, mw)
    logits = F.interpolate(logits, size=shape, mode="bilinear", align_corners=False)  # (B, N, H, W)
    boxes = dets[..., :4].float()
    x1, y1, x2, y2 = (boxes[..., i, None, None] for i in range(4))  # (B, N, 1, 1) each
    cols = torch.arange(logits.shape[3], device=dets.device, dtype=torch.float32).view(1, 1, 1, -1)
    rows = torch.arange(logits.shape[2], device=dets.device, dtype=torch.float32).view(1, 1, -1, 1)
    inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    return ((logits > 0) & inside).to(torch.uint8)


class End2End(nn.Module):
    """Model + in-graph NMS (+ optional in-graph masks), for `nms=True` / `masks=True` exports.

    Outputs: nms only -> (dets (B, max_det, 6 + nm), protos (B, nm, H/4, W/4)) for segment, dets for detect;
    masks -> (boxes (B, max_det, 4) xyxy input px, scores (B, max_det), classes (B, max_det) int64,
    masks (B, max_det, H, W) uint8). Rows/masks past the kept detections are zeros (score 0).
    """

    def __init__(
        self,
        model: nn.Module,
        nc: int,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
        agnostic: bool = False,
        masks: bool = False,
    ):
        super().__init__()
        self.model = model
        self.nc, self.conf, self.iou, self.max_det, self.agnostic, self.masks = nc, conf, iou, max_det, agnostic, masks

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        y, protos = out if isinstance(out, (tuple, list)) else (out, None)
        dets = nms_in_graph(y, self.nc, self.conf, self.iou, self.max_det, self.agnostic)
        if not self.masks:
            return dets if protos is None else (dets, protos)
        masks = masks_in_graph(dets, protos, (images.shape[2], images.shape[3]))
        return dets[..., :4], dets[..., 4], dets[..., 5].long(), masks
