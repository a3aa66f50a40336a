"""Build a model from its YAML description: an explicit table of blocks, no eval()/globals()."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..utils.log import log
from .blocks import C2PSA, C3, SPPF, Bottleneck, C2f, C3k, C3k2, Concat, Conv, DWConv
from .heads import Detect, Segment

MODELS_DIR = Path(__file__).resolve().parents[1] / "config" / "models"

BLOCKS: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "DWConv": DWConv,
    "Bottleneck": Bottleneck,
    "C2f": C2f,
    "C3": C3,
    "C3k": C3k,
    "C3k2": C3k2,
    "SPPF": SPPF,
    "C2PSA": C2PSA,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "Upsample": nn.Upsample,
    "Detect": Detect,
    "Segment": Segment,
}
# Blocks whose first YAML arg is an output channel count (scaled by width) and whose input is one tensor.
_CHANNEL_BLOCKS = {Conv, DWConv, Bottleneck, C2f, C3, C3k, C3k2, SPPF, C2PSA}
# Blocks that take the repeat count as their third constructor argument.
_REPEAT_BLOCKS = {C2f, C3, C3k, C3k2, C2PSA}
# Blocks that make a model "modern" (non-legacy head, as in YOLO11).
_MODERN_BLOCKS = {C3k2, C2PSA}


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of `divisor` that is >= x."""
    return int(math.ceil(x / divisor) * divisor)


def guess_scale(name: str) -> str | None:
    """Scale letter from a model file name as users type it: 'yolo11n-seg.yaml' -> 'n'."""
    m = re.search(r"yolo(?:v)?\d+([nslmx])(?![a-z])", Path(name).stem)
    return m.group(1) if m else None


def unscaled_name(name: str) -> str:
    """'yolo11n-seg.yaml' -> 'yolo11-seg.yaml' (the file that holds every scale)."""
    return re.sub(r"(yolo(?:v)?\d+)([nslmx])(?![a-z])", r"\1", Path(name).name)


def load_model_yaml(path: str | Path) -> dict[str, Any]:
    """Read a model YAML (a bundled name like 'yolo11n-seg.yaml' or a file path) and note its scale."""
    path = Path(path)
    candidates = [path, MODELS_DIR / path.name, MODELS_DIR / unscaled_name(path.name)]
    if path.suffix == "":
        candidates += [path.with_suffix(".yaml"), MODELS_DIR / unscaled_name(path.name + ".yaml")]
    file = next((p for p in candidates if p.is_file()), None)
    if file is None:
        bundled = ", ".join(sorted(p.name for p in MODELS_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"model YAML '{path}' not found; bundled model YAMLs are {bundled} (with a scale)")
    cfg = yaml.safe_load(file.read_text())
    if not isinstance(cfg, dict) or "backbone" not in cfg or "head" not in cfg:
        raise ValueError(f"{file}: not a model YAML (needs 'backbone' and 'head' keys)")
    cfg.setdefault("scale", guess_scale(path.name) or "")
    cfg["yaml_file"] = str(path.name)
    return cfg


def _resolve_scale(cfg: dict[str, Any]) -> tuple[float, float, float]:
    scales = cfg.get("scales")
    if not scales:
        return cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0), float("inf")
    scale = cfg.get("scale") or ""
    if scale not in scales:
        first = next(iter(scales))
        log.warning(f"WARNING: no model scale given in '{cfg.get('yaml_file', 'model YAML')}', using scale '{first}'.")
        cfg["scale"] = scale = first
    depth, width, max_channels = scales[scale]
    return depth, width, max_channels


def parse_layers(cfg: dict[str, Any], in_channels: int = 3) -> tuple[nn.Sequential, list[int]]:
    """Turn the YAML's backbone + head rows `[from, repeats, block, args]` into modules.

    Returns the layers (each with `.f` = its input index/indices and `.i` = its index) and the sorted indices whose
    outputs later layers consume.
    """
    depth, width, max_channels = _resolve_scale(cfg)
    nc = cfg["nc"]
    scale = cfg.get("scale") or ""
    rows = cfg["backbone"] + cfg["head"]
    legacy = not any(row[2] in ("C3k2", "C2PSA") for row in rows)
    channels = [in_channels]
    layers, save = [], []
    for i, (f, n, name, args) in enumerate(rows):
        if name not in BLOCKS:
            raise ValueError(f"layer {i}: unknown block '{name}'; known blocks are {sorted(BLOCKS)}")
        block = BLOCKS[name]
        args = [nc if a == "nc" else None if a == "None" else a for a in copy.deepcopy(args)]
        n = max(round(n * depth), 1) if n > 1 else n
        if block in _CHANNEL_BLOCKS:
            c1, c2 = channels[f], args[0]
            c2 = make_divisible(min(c2, max_channels) * width, 8)
            args = [c1, c2, *args[1:]]
            if block in _REPEAT_BLOCKS:
                args.insert(2, n)
                n = 1
            if block is C3k2 and scale in ("m", "l", "x"):
                args[3] = True  # the official YOLO11 m/l/x use C3k inner blocks everywhere
        elif block is Concat:
            c2 = sum(channels[x] for x in f)
        elif block in (Detect, Segment):
            ch = [channels[x] for x in f]
            if block is Segment:
                args[2] = make_divisible(min(args[2], max_channels) * width, 8)
                args = [args[0], args[1], args[2], ch]
            else:
                args = [args[0], ch]
            c2 = None
        else:
            c2 = channels[f]
        if block in (Detect, Segment):
            module = block(*args, legacy=legacy)
        elif n > 1:
            module = nn.Sequential(*(block(*args) for _ in range(n)))
        else:
            module = block(*args)
        module.f, module.i = f, i
        layers.append(module)
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class YOLOModel(nn.Module):
    """A YOLO detection or segmentation network built from a YAML config.

    Attributes: `model` (the layers; state-dict keys `model.<i>.*`), `stride` (tensor of the head's strides),
    `names` ({id: name}), `nc`, `task` ('segment' or 'detect'), `yaml` (the config), `args` (train args).
    """

    def __init__(self, cfg: str | Path | dict[str, Any] = "yolo11n-seg.yaml", nc: int | None = None, ch: int = 3):
        super().__init__()
        self.yaml = copy.deepcopy(cfg) if isinstance(cfg, dict) else load_model_yaml(cfg)
        self.yaml.setdefault("scale", "")
        if nc is not None and nc != self.yaml.get("nc"):
            self.yaml["nc"] = int(nc)
        self.yaml["channels"] = ch
        self.model, self.save = parse_layers(self.yaml, ch)
        head = self.model[-1]
        self.task = "segment" if isinstance(head, Segment) else "detect"
        self.nc = head.nc
        self.names: dict[int, str] = {i: f"class{i}" for i in range(self.nc)}
        self.args: dict[str, Any] = {}
        head.stride = self._compute_strides(ch)
        self.stride = head.stride
        head.bias_init()

    @torch.no_grad()
    def _compute_strides(self, ch: int) -> torch.Tensor:
        size = 256
        was_training = self.training
        self.eval()
        feats = self.forward_features(torch.zeros(1, ch, size, size))
        self.train(was_training)
        return torch.tensor([size / f.shape[-2] for f in feats])

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run every layer but the head; return the head's inputs."""
        outputs: list[torch.Tensor | None] = []
        for m in self.model[:-1]:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        head = self.model[-1]
        return [x if j == -1 else outputs[j] for j in head.f]

    def forward(self, x: torch.Tensor, with_raw: bool = False):
        """(B, 3, H, W) float RGB in [0, 1] -> see Detect / Segment for the outputs per mode.

        `with_raw` (eval only) also returns the train-mode outputs, so validation can compute losses.
        """
        head = self.model[-1]
        feats = self.forward_features(x)
        return head(feats, with_raw=True) if with_raw and not self.training else head(feats)

    def fuse(self) -> YOLOModel:
        """Fold every BatchNorm into its convolution (in place, for inference)."""
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    def is_fused(self) -> bool:
        return not any(isinstance(m, nn.BatchNorm2d) for m in self.modules())
