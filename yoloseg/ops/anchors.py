"""Anchor points and distance <-> box conversions shared by the head and the loss."""

from __future__ import annotations

import torch


def make_anchors(
    feats: list[torch.Tensor], strides: torch.Tensor | list[float], offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre anchor points for each feature level.

    Args:
        feats: per-level maps (B, C, h_i, w_i).
        strides: the stride of each level.
    Returns:
        anchor_points (A, 2) xy in grid units of their level, stride_tensor (A, 1); A = sum h_i * w_i,
        levels in order, row-major within a level.
    """
    points, stride_list = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for i, feat in enumerate(feats):
        h, w = feat.shape[2], feat.shape[3]
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride = strides[i]
        if isinstance(stride, torch.Tensor):  # no .item(): keeps the head one graph under torch.compile
            stride_list.append(stride.to(device=device, dtype=dtype).expand(h * w, 1))
        else:
            stride_list.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Convert (left, top, right, bottom) distances from anchor points to xywh (default) or xyxy boxes."""
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchor_points: torch.Tensor, bbox_xyxy: torch.Tensor, reg_max: float) -> torch.Tensor:
    """Convert xyxy boxes to (left, top, right, bottom) distances, clamped to [0, reg_max - 0.01]."""
    x1y1, x2y2 = bbox_xyxy.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp_(0, reg_max - 0.01)
