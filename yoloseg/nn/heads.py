"""Detection and segmentation heads (anchor-free, DFL box regression, decoupled class branch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.anchors import dist2bbox, make_anchors
from .blocks import DFL, Conv, DWConv, Proto


class Detect(nn.Module):
    """Per level: a box branch (cv2, 4×reg_max DFL logits) and a class branch (cv3, nc logits).

    train mode returns the raw per-level maps (B, 4*reg_max + nc, h_i, w_i); eval mode returns the decoded
    (B, 4 + nc, A) tensor: xywh in input pixels and sigmoid class scores.
    """

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), reg_max: int = 16, legacy: bool = False):
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + reg_max * 4
        self.stride = torch.zeros(self.nl)  # set by the model builder
        self.legacy = legacy
        c2 = max(16, ch[0] // 4, reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch
        )
        if legacy:  # YOLOv8: plain 3×3 convolutions
            self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        else:  # YOLO11: depth-wise separable
            self.cv3 = nn.ModuleList(
                nn.Sequential(
                    nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                    nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                    nn.Conv2d(c3, nc, 1),
                )
                for x in ch
            )
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self._anchor_key: tuple | None = None
        self.anchors = torch.empty(0)
        self.strides = torch.empty(0)

    def level_maps(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        """Raw per-level maps (B, 4*reg_max + nc, h_i, w_i)."""
        return [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Per-level maps -> (B, 4 + nc, A): DFL-decoded xywh in input pixels, sigmoid scores.

        Under bf16 autocast the decoding runs in fp32: bf16 resolves only ~2 px at 640 px coordinates."""
        if feats[0].dtype == torch.bfloat16 and torch.is_autocast_enabled(feats[0].device.type):
            with torch.autocast(feats[0].device.type, enabled=False):
                return self.decode([f.float() for f in feats])
        b = feats[0].shape[0]
        anchors, strides = self.anchor_points(feats)
        x = torch.cat([f.view(b, self.no, -1) for f in feats], 2)  # (B, no, A)
        return self.decode_columns(x, anchors.unsqueeze(0), strides)

    def anchor_points(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor points (2, A) and strides (1, A) of per-level maps `feats` (their sizes, dtype and device), kept
        for the next call with the same."""
        key = tuple(f.shape[2:] for f in feats) + (feats[0].device, feats[0].dtype)
        if key != self._anchor_key or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            anchors, strides = make_anchors(feats, self.stride, 0.5)
            self.anchors, self.strides = anchors.transpose(0, 1), strides.transpose(0, 1)  # (2, A), (1, A)
            self._anchor_key = key
        return self.anchors, self.strides

    def decode_columns(self, x: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """Raw columns (B, no, K) of anchors at points `anchors` (1 or B, 2, K) with `strides` (.., 1, K) ->
        (B, 4 + nc, K) decoded: each column's values do not depend on the other columns (see DFL)."""
        box, cls = x.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors, xywh=True, dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    def forward(self, x: list[torch.Tensor], with_raw: bool = False):
        """train: per-level maps; eval: decoded (B, 4 + nc, A), or (decoded, maps) when `with_raw` (val losses)."""
        feats = self.level_maps(x)
        if self.training:
            return feats
        return (self.decode(feats), feats) if with_raw else self.decode(feats)

    def bias_init(self) -> None:
        """Initial biases: box logits 1.0; class logits for a prior of ~5 objects per 640² image."""
        for a, b, s in zip(self.cv2, self.cv3, self.stride):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / float(s)) ** 2)


class Segment(Detect):
    """Detect + mask prototypes (from the P3 features) + per-anchor mask coefficients (cv4).

    train mode: (feats, mask_coefficients (B, nm, A), protos (B, nm, H/4, W/4));
    eval mode: (cat(decoded, mask_coefficients) (B, 4 + nc + nm, A), protos).

    With `defer_branches` set (an attribute of an inference copy, not a weight), eval mode returns only (class maps
    (cv3 per level), level inputs), for a caller that runs the box branch (cv2) around the anchors whose scores pass
    its threshold, decodes those anchors with `decode_columns`, and runs the mask coefficients (cv4) and prototypes
    only where its detections read them (the CPU predictor, see engine.deferred).
    """

    defer_branches = False

    def __init__(
        self, nc: int = 80, nm: int = 32, npr: int = 256, ch: tuple[int, ...] = (), reg_max: int = 16, legacy=False
    ):
        super().__init__(nc, ch, reg_max, legacy)
        self.nm = nm
        self.npr = npr
        self.proto = Proto(ch[0], npr, nm)
        c4 = max(ch[0] // 4, nm)
        self.cv4 = nn.ModuleList(nn.Sequential(Conv(x, c4, 3), Conv(c4, c4, 3), nn.Conv2d(c4, nm, 1)) for x in ch)

    def forward(self, x: list[torch.Tensor], with_raw: bool = False):
        """See the class docstring; eval with `with_raw` returns ((decoded, protos), train-mode outputs)."""
        if self.defer_branches and not self.training and not with_raw:  # the caller runs cv2, cv4 and proto
            return tuple(self.cv3[i](x[i]) for i in range(self.nl)), tuple(x)
        protos = self.proto(x[0])
        b = protos.shape[0]
        mc = torch.cat([self.cv4[i](x[i]).view(b, self.nm, -1) for i in range(self.nl)], 2)  # (B, nm, A)
        feats = self.level_maps(x)
        if self.training:
            return feats, mc, protos
        out = torch.cat((self.decode(feats), mc), 1), protos
        return (out, (feats, mc, protos)) if with_raw else out
