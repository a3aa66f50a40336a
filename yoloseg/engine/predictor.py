"""Prediction: sources -> letterbox -> model -> NMS -> masks -> `Results`, plus saving and console output.

`Predictor(model, args).predict(source, stream=False)` runs a PyTorch `YOLOModel` or any backend object with the
same call convention (`backend(im (B, 3, H, W) float RGB 0-1) -> (y (B, 4+nc+nm, A), protos (B, nm, H/4, W/4))`
and attributes `stride`, `names`, `pt`, `dynamic`, `imgsz`, `fp16`, `device`). Exports with in-graph NMS
(`end2end`/`nms`: (dets (B, N, 6+nm) x1 y1 x2 y2 conf cls coeffs, zero rows past the kept ones, protos)) or in-graph
masks (`masks`: (boxes (B, N, 4), scores (B, N), classes (B, N), masks (B, N, H, W) uint8)) are read as such: rows
above `conf` (and in `classes`) are kept, up to `max_det`; with `retina_masks` in-graph masks are resized to the
original image (bilinear, > 0.5) and cropped to the scaled boxes.

Numerics follow the incumbent (INCUMBENT.md §5.3-5.7): letterbox with `auto` padding only for PyTorch (or dynamic)
models when every image of the batch has one shape, NMS with multi_label off, masks at the letterboxed input size
(bilinear upsample of the logits, threshold > 0, crop with the input-space boxes) or, with `retina_masks`, at the
original size from boxes scaled first; predictions whose mask is empty are dropped. A CPU predictor's own model
defers three branches of its head, with the same boxes and masks: the box branch runs only around the anchors
whose scores may pass `conf`, the mask coefficients only around the anchors NMS keeps, the prototypes only over the
region their masks read (see engine.deferred).

Test-time augmentation (`augment=True`, beyond the incumbent, which ignores it for segmentation): the batch also
runs flipped left-right at scale 0.83 and unflipped at 0.67 (inputs resized bilinearly, padded bottom/right to the
stride). Each pass's boxes are mapped back to the unaugmented input frame, the largest-stride anchors of the full-
size pass and the smallest-stride anchors of the 0.67 pass are dropped (objects those levels see poorly at that
scale), and all candidates enter one NMS. Every detection keeps the index of the pass it came from, and its mask is
assembled from that pass's prototypes after resampling them into the unaugmented input frame (`grid_sample`,
bilinear). Mask logits are linear in the prototypes, so this equals building the mask in the augmented frame and
warping its logits back; the unaugmented pass is used untouched, so augment=False numerics are unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config.defaults import DEFAULTS
from ..data.augment.letterbox import PAD_VALUE, letterbox
from ..data.sources import SourceBatch, Sources, load_sources
from ..ops.boxes import scale_boxes
from ..ops.masks import crop_mask, process_mask, process_mask_native, scale_masks
from ..ops.nms import non_max_suppression
from ..results import Results, write_image
from ..utils.log import log
from ..utils.settings import resolve_save_dir
from ..utils.torch_utils import check_imgsz, select_device
from .deferred import DeferredBranches, defer_head
from .inference import CompiledForward, forward_batched, inference_copy, inference_precision, micro_batch_size

# Predict-mode defaults that differ from the flat config's (train-oriented) defaults.
PREDICT_DEFAULTS = {"conf": 0.25, "batch": 1, "save": False, "mode": "predict"}
TTA_SCALES = (1.0, 0.83, 0.67)
TTA_FLIPS = (False, True, False)
# A CPU predictor runs its model as a TorchScript graph (inference.CompiledForward) from the GRAPH_AFTER-th batch on,
# unless it was called once on a list with fewer than GRAPH_MIN_LEFT images left. Making the graph costs about three
# forwards, once (~0.17 s at 640x480 on 2 cores). On 2 cores, medians of 6 alternating runs: predicting coco128's 128
# mixed-shape images took 7.45 against 8.10 s at 640; its first 32 images 2.50 against 2.60 s at 640 and 1.19 against
# 1.24 s at 320. It gains ~10-25% per image on a stream of one shape.
GRAPH_AFTER = 3
GRAPH_MIN_LEFT = 30


class Predictor:
    """Runs prediction for one model with one set of arguments.

    Args:
        model: a `YOLOModel` (a fused eval copy is made when needed; the caller's model is never modified) or a
            backend object (see the module docstring).
        args: flat config keys (conf, iou, imgsz, batch, max_det, classes, agnostic_nms, retina_masks, crop_masks,
            augment, half, compile, jit, device, vid_stride, stream_buffer, verbose, save, save_txt, save_conf,
            save_crop, save_frames, show, show_labels, show_conf, show_boxes, line_width, project, name, exist_ok).
    """

    def __init__(self, model: Any, args: dict[str, Any] | None = None, callbacks: dict[str, list] | None = None):
        self.args = {**DEFAULTS, **PREDICT_DEFAULTS, **(args or {})}
        if self.args.get("conf") is None:
            self.args["conf"] = PREDICT_DEFAULTS["conf"]
        self.callbacks = callbacks if callbacks is not None else {}
        self.source_model = model
        # listed once: a submodule swapped in later shows in its parent's _modules, which the fingerprint reads
        self._weights = _WeightsFingerprint(list(model.modules()) if isinstance(model, nn.Module) else [])
        self._fingerprint = self._weights()
        # torch_model: a YOLOModel run eagerly here; pt (below) is also true for backends that run through torch
        self.pt = self.torch_model = isinstance(model, nn.Module)
        self.backend_precision: str | None = None  # what an exported model's set_precision is given
        if self.pt:
            self.device = select_device(self.args.get("device"))
            precision = inference_precision(self.args.get("half"), self.device)
            self.fp16 = precision == "fp16"  # bf16 (CPU) keeps fp32 weights and inputs and autocasts the forward
            # channels-last convolutions are ~25% faster on CPU (oneDNN) and with fp16 on GPU
            self.channels_last = bool(self.args.get("channels_last", self.device.type == "cpu" or self.fp16))
            dtype = torch.float16 if self.fp16 else torch.float32
            self.model = inference_copy(model, self.device, dtype, self.channels_last)
            # on a CPU three branches of the head run only where their outputs are read (engine.deferred); set before
            # the copies and traces below
            head = defer_head(self.model) if self.device.type == "cpu" else None
            graphs = self.device.type == "cpu" and bool(self.args.get("jit", True))
            self.forward = CompiledForward(self.model, self.args.get("compile"), precision == "bf16", graphs)
            self.branches = DeferredBranches(self.forward, head) if head is not None else None
            self.dynamic = True
        else:
            self.model = self.forward = model
            self.branches = None
            self.channels_last = False
            self.device = torch.device(getattr(model, "device", "cpu"))
            # OpenVINO: half=True runs bf16 on bf16 hardware, like PyTorch; set again before each batch, as the
            # backend may be shared with val or another predictor
            if hasattr(model, "set_precision"):
                self.backend_precision = inference_precision(self.args.get("half"), self.device)
                model.set_precision(self.backend_precision)
            self.fp16 = bool(getattr(model, "fp16", False))
            self.pt = bool(getattr(model, "pt", False))
            self.dynamic = bool(getattr(model, "dynamic", False))
        # a static export that takes smaller inputs as they are (yoloseg's OpenVINO IRs): letterbox it minimally too
        self.reshapeable = bool(getattr(model, "reshapeable", False)) and not isinstance(model, nn.Module)
        self.graph_masks = bool(getattr(model, "masks", False)) and not isinstance(model, nn.Module)
        self.end2end = self.graph_masks or bool(getattr(model, "end2end", False) or getattr(model, "nms", False))
        stride = getattr(model, "stride", 32)
        self.stride = max(int(stride.max() if isinstance(stride, torch.Tensor) else np.max(stride)), 32)
        names = getattr(model, "names", None) or {}
        self.names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names)
        self.nc = int(getattr(model, "nc", 0) or len(self.names))
        self.imgsz = self._resolve_imgsz()
        self.save_dir: Path | None = None
        self.seen = 0
        self.calls = self.batches = 0  # predict() calls and batches run, over this predictor's life
        self._writers: dict[str, _VideoWriter] = {}

    def _resolve_imgsz(self) -> tuple[int, int]:
        imgsz = check_imgsz(self.args["imgsz"], self.stride)
        fixed = getattr(self.model, "imgsz", None)
        if not self.pt and not self.dynamic and fixed is not None:
            fixed = check_imgsz(fixed, self.stride)
            if tuple(fixed) != tuple(imgsz):
                log.warning(
                    f"WARNING: this model was exported at imgsz={list(fixed)}; using it instead of {list(imgsz)}"
                )
            imgsz = tuple(fixed)
        return imgsz

    # ---- public API
    def __call__(self, source: Any = None, stream: bool = False):
        return self.predict(source, stream)

    def reusable_for(self, args: dict[str, Any], model: Any = None) -> bool:
        """Whether this predictor can serve a call with `args` (and `model`, when given) after `update_args`:
        False when the model object or its weights changed since it was built, or device / half / compile / jit
        differ."""
        if model is not None and model is not self.source_model:
            return False
        if self._weights() != self._fingerprint:
            return False  # trained or reloaded in place: the fused inference copy is stale
        merged = {**self.args, **args}
        return all(merged.get(k) == self.args.get(k) for k in ("device", "half", "channels_last", "compile", "jit"))

    def update_args(self, args: dict[str, Any]) -> None:
        """Take new arguments (conf, imgsz, save flags, ...) for the next calls; a new project / name / exist_ok
        starts a new save folder."""
        old = self.args
        self.args = {**old, **args}
        if self.args.get("conf") is None:
            self.args["conf"] = PREDICT_DEFAULTS["conf"]
        if any(self.args.get(k) != old.get(k) for k in ("project", "name", "exist_ok")):
            self.save_dir = None
        self.imgsz = self._resolve_imgsz()

    def _run_callbacks(self, event: str) -> None:
        for fn in self.callbacks.get(event, []):
            fn(self)

    def predict(self, source: Any = None, stream: bool = False) -> list[Results] | Iterator[Results]:
        """Predict on `source` (anything `load_sources` accepts; args['source'] when None).

        Returns a list of `Results`, or with `stream=True` a generator that yields them one at a time and keeps
        nothing (use it for videos and long folders).
        """
        source = self.args.get("source") if source is None else source
        if source is None:
            raise ValueError("predict needs a source: an image, folder, glob, video, URL, array, tensor or a list")
        a = self.args
        # resolved now, so a missing file fails at the call even with stream=True
        sources = load_sources(source, self.imgsz, self.stride, a["vid_stride"], a["stream_buffer"], a["batch"])
        if self.save_dir is None and (a.get("save") or a.get("save_txt") or a.get("save_crop") or a.get("save_frames")):
            self.save_dir = resolve_save_dir(
                self.args, "predict"
            )  # once per predictor, as the incumbent: later calls add to it
        self.calls += 1
        gen = self._run(sources)
        return gen if stream else list(gen)

    # ---- pipeline
    def _run(self, sources: Sources) -> Iterator[Results]:
        a = self.args
        totals = np.zeros(3)
        shape: tuple[int, ...] = ()
        self.seen = 0
        n_labels = 0
        self._run_callbacks("on_predict_start")
        try:
            unbounded = sources.mode in ("video", "stream")
            for batch in sources:
                self._run_callbacks("on_predict_batch_start")
                results, shape, dt = self._predict_batch(batch, None if unbounded else len(sources) - self.seen)
                self.results = results
                self._run_callbacks("on_predict_postprocess_end")
                totals += dt
                for i, r in enumerate(results):
                    self.seen += 1
                    n_labels += self._write(r, batch, i, sources)
                    if a.get("verbose"):
                        h, w = shape[2:]
                        log.info(f"{batch.infos[i]}: {h}x{w} {r.verbose()}{r.speed['inference']:.1f}ms")
                    yield r
                self._run_callbacks("on_predict_batch_end")
        finally:
            self._close_writers()
        self._run_callbacks("on_predict_end")
        if a.get("verbose") and self.seen:
            pre, inf, post = totals * 1e3 / self.seen
            log.info(
                f"Speed: {pre:.1f}ms preprocess, {inf:.1f}ms inference, {post:.1f}ms postprocess per image at shape "
                f"{(min(a['batch'], self.seen), 3, *shape[2:])}"
            )
        if self.save_dir is not None and (a.get("verbose") or a.get("save")):
            log.info(f"Results saved to {self.save_dir}")
            if a.get("save_txt"):
                log.info(f"{n_labels} label{'s' * (n_labels != 1)} saved to {self.save_dir / 'labels'}")

    def _graph_due(self, left: int | None) -> bool:
        """Whether to trace the model into a TorchScript graph now (CompiledForward.prepare; ~three forwards' time once,
        then each forward ~10-25% faster on a CPU at batch 1): from the GRAPH_AFTER-th batch of a predictor that keeps
        being called, or of a video, stream or long list (`left`: images left in this call's source, None when
        unbounded); a short list of images predicted once stays eager."""
        if self.args.get("augment") or self.batches < GRAPH_AFTER:
            return False
        return self.calls >= GRAPH_AFTER or left is None or left >= GRAPH_MIN_LEFT

    def _predict_batch(
        self, batch: SourceBatch, left: int | None = None
    ) -> tuple[list[Results], tuple[int, ...], np.ndarray]:
        """Preprocess, infer and postprocess one batch (`left`: images left in the source, this batch's included,
        None for videos and streams); returns (results, input shape, seconds per stage)."""
        t0 = time.perf_counter()
        x = self.preprocess(batch.images) if batch.tensor is None else self._to_input(batch.tensor)
        t1 = time.perf_counter()
        # one-off setups, as loading a model, outside the timed stages: the first input of a shape compiles a
        # reshapeable backend for it; the model is traced into a TorchScript graph once it pays (CPU)
        self.batches += 1
        if self.backend_precision is not None:
            self.model.set_precision(self.backend_precision)
        if self.reshapeable:
            self.model.prepare(tuple(x.shape))
        elif self.torch_model and self._graph_due(left):
            self.forward.prepare(x)
        setup = time.perf_counter() - t1
        with torch.inference_mode():
            out = self.infer(x)
            t2 = time.perf_counter() - setup
            if self.branches is not None:
                self.branches.seconds = 0.0  # the deferred branches run within postprocess
            # in inference mode too, as the incumbent's predict: ~11% less time without autograd's bookkeeping
            results = self.postprocess(out, x.shape[2:], batch.images, batch.paths)
        t3 = time.perf_counter() - setup
        if self.branches is not None:
            t2 += self.branches.seconds  # and count as inference
        n = len(results)
        speed = {
            "preprocess": (t1 - t0) * 1e3 / n,
            "inference": (t2 - t1) * 1e3 / n,
            "postprocess": (t3 - t2) * 1e3 / n,
        }
        for r in results:
            r.speed = dict(speed)
            r.save_dir = str(self.save_dir) if self.save_dir is not None else None
        return results, tuple(x.shape), np.array([t1 - t0, t2 - t1, t3 - t2])

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """(h0, w0, 3) uint8 BGR images -> (B, 3, H, W) float RGB 0-1 on the model's device (§5.3)."""
        same_shape = all(im.shape == images[0].shape for im in images)
        # minimal padding whenever the model takes any stride multiple (the incumbent's predict always has rect=True;
        # the flat config's `rect` is a training key, so it is not consulted here)
        auto = same_shape and (self.pt or self.dynamic or self.reshapeable)
        boxed = [
            letterbox(im, self.imgsz, auto=auto, scaleup=True, center=True, stride=self.stride)[0] for im in images
        ]
        # (B, H, W, 3) RGB; OpenCV swaps the channels ~3x faster than a strided flip (0.4 against 1.3 ms at 640x480)
        arr = np.stack([cv2.cvtColor(b, cv2.COLOR_BGR2RGB) for b in boxed])
        if self.channels_last:  # (B, H, W, 3) memory is channels-last already: a view, no transpose
            return self._to_input(torch.from_numpy(arr).permute(0, 3, 1, 2))
        return self._to_input(torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))))

    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 0-255 (divided by 255) or float 0-1 (taken as is) -> the model's device and dtype."""
        scale = not x.is_floating_point()
        x = x.to(self.device, non_blocking=True)
        # under CPU bf16 the first convolution takes bf16 anyway: cast here, where the uint8 input is read, not in a
        # second pass over a fresh fp32 copy (the same numbers: bf16 division rounds the fp32 quotient); test-time
        # augmentation resamples the input first, so it keeps fp32
        bf16 = self.torch_model and self.forward.bf16 and not self.args.get("augment")
        x = x.half() if self.fp16 else x.to(torch.bfloat16) if bf16 else x.float()
        x = x.div_(255) if scale else x  # x is a fresh float copy of the integer input
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def infer(self, x: torch.Tensor) -> tuple:
        """Run the model: (y (B, 4+nc+nm, A), protos (B, nm, H/4, W/4) or None for detection models), or the
        in-graph NMS / mask outputs of an end-to-end export (see the module docstring). A CPU predictor's own model
        defers its branches: y holds only the anchors that may pass `conf`, each one's anchor index in place of the
        mask coefficients, and the second output is (P3 features, level inputs) (see `DeferredBranches.complete_boxes`).

        With augment, y gains a last channel holding the pass index and protos is a list with one (B, nm, H/4, W/4)
        tensor per pass, already in the unaugmented frame.
        """
        if self.args.get("augment"):
            if (self.pt or self.dynamic) and not self.end2end:
                return self._infer_tta(x)
            log.warning("WARNING: augment=True needs a PyTorch or dynamic-shape model without in-graph NMS; ignored")
        out = forward_batched(self.forward, x) if self.torch_model else self.forward(x)
        if self.branches is not None:
            self.branches.micro_batch = micro_batch_size(x)
            return self.branches.complete_boxes(out, float(self.args["conf"]))
        return tuple(out) if self.end2end else _split_output(out)

    def _infer_tta(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        h, w = x.shape[2:]
        ys, protos = [], []
        last = len(TTA_SCALES) - 1
        for k, (scale, flip) in enumerate(zip(TTA_SCALES, TTA_FLIPS)):
            xi = x.flip(-1) if flip else x
            hs, ws = (h, w) if scale == 1 else (int(h * scale), int(w * scale))
            if scale != 1:
                hp, wp = -(-hs // self.stride) * self.stride, -(-ws // self.stride) * self.stride
                xi = F.interpolate(xi, size=(hs, ws), mode="bilinear", align_corners=False)
                xi = F.pad(xi, (0, wp - ws, 0, hp - hs), value=PAD_VALUE / 255)
            out = self.forward(xi)
            if self.branches is not None:
                self.branches.micro_batch = len(xi)
                y, p = self.branches.complete_all(out, float(self.args["conf"]))  # any anchor may be kept
            else:
                y, p = _split_output(out)
            y = y.clone()
            gx, gy = ws / w, hs / h
            y[:, 0] /= gx
            y[:, 2] /= gx
            y[:, 1] /= gy
            y[:, 3] /= gy
            if flip:
                y[:, 0] = w - y[:, 0]
            counts = _level_anchor_counts(xi.shape[2:], self.model)
            if k == 0 and len(counts) > 1:
                y = y[..., : -counts[-1]]  # full size: drop the coarsest level
            elif k == last and len(counts) > 1:
                y = y[..., counts[0] :]  # smallest scale: drop the finest level
            ys.append(torch.cat((y, torch.full_like(y[:, :1], k)), 1))
            if p is not None:
                protos.append(p if k == 0 else _protos_to_base(p, (h, w), (hs, ws), flip))
        return torch.cat(ys, 2), (protos or None)

    def postprocess(
        self, out: tuple, shape: tuple[int, int], images: list[np.ndarray], paths: list[str]
    ) -> list[Results]:
        """NMS (or in-graph detections), masks, boxes to original pixels, empty-mask filter -> one `Results` each."""
        shape = tuple(shape)
        tta = isinstance(out[1], list)
        preds, protos, graph_masks = self._detections(out)
        if self.branches is not None and not tta:
            preds, protos = self.branches.complete_detections(
                preds, protos, shape, bool(self.args.get("crop_masks", True))
            )
        results = []
        for i, pred in enumerate(preds):
            orig = images[i]
            gm = graph_masks[i] if graph_masks is not None else None
            boxes, masks = self._boxes_and_masks(pred, protos, i, shape, orig.shape[:2], tta, gm)
            results.append(Results(orig, paths[i], self.names, boxes=boxes, masks=masks))
        return results

    def _detections(self, out: tuple) -> tuple[list[torch.Tensor], Any, list[torch.Tensor] | None]:
        """Per image rows (n, 6 + nm [+ pass id]) x1 y1 x2 y2 conf cls coeffs in input pixels, by descending conf;
        the prototypes; and, for in-graph-mask exports, per image masks (n, H, W)."""
        a = self.args
        classes = a.get("classes")
        classes = [classes] if isinstance(classes, int) else classes
        if not self.end2end:
            y, protos = out
            preds = non_max_suppression(
                y,
                float(a["conf"]),
                float(a["iou"]),
                classes=classes,
                agnostic=bool(a.get("agnostic_nms")),
                multi_label=False,
                max_det=int(a["max_det"]),
                nc=self.nc,
            )
            return preds, protos, None
        if self.graph_masks:
            boxes, scores, cls, masks = out[:4]
            rows, protos = torch.cat((boxes.float(), scores.float()[..., None], cls.float()[..., None]), -1), None
        else:
            rows, protos, masks = out[0].float(), (out[1] if len(out) > 1 else None), None
        preds, kept_masks = [], []
        for i in range(rows.shape[0]):
            keep = rows[i, :, 4] > float(a["conf"])
            if classes is not None:
                keep &= torch.isin(rows[i, :, 5], torch.tensor(classes, dtype=rows.dtype, device=rows.device))
            idx = keep.nonzero().squeeze(1)[: int(a["max_det"])]
            preds.append(rows[i, idx])
            if masks is not None:
                kept_masks.append(masks[i, idx])
        return preds, protos, (kept_masks if masks is not None else None)

    def _boxes_and_masks(
        self,
        pred: torch.Tensor,
        protos: Any,
        i: int,
        shape: tuple[int, int],
        orig_shape: tuple[int, int],
        tta: bool,
        graph_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """pred (n, 6 + nm [+1 pass id]) input pixels -> (boxes (k, 6) original pixels, masks (k, h, w) or None)."""
        pass_id = pred[:, -1].long() if tta else None
        pred = pred[:, :-1] if tta else pred
        conf_cls = pred[:, 4:6]
        boxes = scale_boxes(shape, pred[:, :4], orig_shape)
        if protos is None and graph_masks is None:
            return torch.cat((boxes, conf_cls), 1), None
        if not len(pred):
            return pred.new_zeros((0, 6)), None
        retina = bool(self.args.get("retina_masks"))
        crop = bool(self.args.get("crop_masks", True))
        coeffs = pred[:, 6:]

        def masks_for(p: torch.Tensor, sel: slice | torch.Tensor) -> torch.Tensor:
            if retina:
                return process_mask_native(p, coeffs[sel], boxes[sel], orig_shape, crop=crop)
            return process_mask(p, coeffs[sel], pred[sel, :4], shape, upsample=True, crop=crop)

        if graph_masks is not None:  # in-graph masks are at the input size, already cropped to the boxes
            masks = graph_masks.to(torch.uint8)
            if retina:
                masks = _masks_to_original(masks, boxes, orig_shape)
        elif pass_id is None:
            masks = masks_for(protos[i], slice(None))
        else:
            size = orig_shape if retina else shape
            masks = torch.zeros((len(pred), *size), dtype=torch.uint8, device=pred.device)
            for k in pass_id.unique().tolist():  # at most 3 passes
                sel = pass_id == k
                masks[sel] = masks_for(protos[k][i], sel)
        keep = masks.flatten(1).any(1).bool()  # predictions whose mask is empty are dropped (§5.5)
        if not bool(keep.all()):
            boxes, conf_cls, masks = boxes[keep], conf_cls[keep], masks[keep]
        if not len(masks):
            return boxes.new_zeros((0, 6)), None
        return torch.cat((boxes, conf_cls), 1), masks

    # ---- outputs
    def _write(self, r: Results, batch: SourceBatch, i: int, sources: Sources) -> int:
        """Save / show one result as the args ask; returns 1 when a label file was written."""
        a = self.args
        frame = batch.frames[i]
        stem = Path(r.path).stem or "image"
        name = stem if frame is None else f"{stem}_{frame}"
        wrote_label = 0
        if self.save_dir is not None and a.get("save_txt"):
            r.save_txt(self.save_dir / "labels" / f"{name}.txt", save_conf=bool(a.get("save_conf")))
            wrote_label = 1
        if self.save_dir is not None and a.get("save_crop"):
            r.save_crop(self.save_dir / "crops", name)
        if not (a.get("save") or a.get("show") or a.get("save_frames")):
            return wrote_label
        img = r.plot(
            conf=bool(a.get("show_conf", True)),
            line_width=a.get("line_width"),
            labels=bool(a.get("show_labels", True)),
            boxes=bool(a.get("show_boxes", True)),
        )
        if a.get("show"):
            r.show(img)
        if self.save_dir is None:
            return wrote_label
        if frame is None:
            if a.get("save"):
                write_image(self.save_dir / (Path(r.path).name if Path(r.path).suffix else f"{stem}.jpg"), img)
        else:
            if a.get("save"):
                writer = self._writers.get(r.path)
                if writer is None:
                    writer = _VideoWriter(self.save_dir, stem, sources.fps.get(r.path, 30.0), img.shape[:2])
                    self._writers[r.path] = writer
                writer.write(img)
            if a.get("save_frames"):
                write_image(self.save_dir / f"{stem}_frames" / f"{name}.jpg", img)
        return wrote_label

    def _close_writers(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


class _VideoWriter:
    """An annotated-video writer (mp4v .mp4, else MJPG .avi) that writes to a hidden temp file and renames it
    into place when closed, so an interrupted run leaves no half-written video under the final name."""

    def __init__(self, folder: Path, stem: str, fps: float, shape: tuple[int, int]):
        h, w = shape
        for fourcc, ext in (("mp4v", ".mp4"), ("MJPG", ".avi")):
            self.tmp = folder / f".{stem}.partial{ext}"
            self.path = folder / f"{stem}{ext}"
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
            if self.writer.isOpened():
                return
            self.writer.release()
        raise OSError(f"cannot open a video writer for {folder / stem} (no mp4v or MJPG encoder in OpenCV)")

    def write(self, img: np.ndarray) -> None:
        self.writer.write(img)

    def close(self) -> None:
        self.writer.release()
        if self.tmp.exists():
            os.replace(self.tmp, self.path)


def _split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model output -> (y, protos or None): a tuple/list (y, protos, ...) or a lone detection tensor."""
    if isinstance(out, (list, tuple)):
        y = out[0]
        protos = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].ndim == 4 else None
        return y, protos
    return out, None


def _level_anchor_counts(shape: tuple[int, int], model: Any) -> list[int]:
    """Anchors per head level for an input of `shape` (H, W): (H / s) * (W / s) for each stride s."""
    strides = getattr(model, "stride", torch.tensor([8.0, 16.0, 32.0]))
    strides = strides.tolist() if isinstance(strides, torch.Tensor) else list(np.atleast_1d(strides))
    h, w = shape
    return [int(-(-h // s) * -(-w // s)) for s in (int(s) for s in strides)]


def _protos_to_base(p: torch.Tensor, base: tuple[int, int], scaled: tuple[int, int], flip: bool) -> torch.Tensor:
    """Resample one TTA pass's prototypes (B, nm, hp/4, wp/4) into the unaugmented input frame (B, nm, H/4, W/4).

    The pass saw the input (H, W) flipped (if `flip`), resized to `scaled` (hs, ws) and padded bottom/right to
    (hp, wp). A base proto cell centred at input pixel X maps to pass pixel (W - X if flipped else X) * ws / W.
    """
    h, w = base
    hs, ws = scaled
    mh, mw = h // 4, w // 4
    hp, wp = p.shape[2] * 4, p.shape[3] * 4
    xs = (torch.arange(mw, device=p.device, dtype=torch.float32) + 0.5) * (w / mw)
    ys = (torch.arange(mh, device=p.device, dtype=torch.float32) + 0.5) * (h / mh)
    if flip:
        xs = w - xs
    gx = xs * (ws / w) * 2 / wp - 1  # normalised (align_corners=False) coordinates in the pass's proto grid
    gy = ys * (hs / h) * 2 / hp - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)  # (mh, mw, 2) as (x, y)
    grid = grid.to(p.dtype).unsqueeze(0).expand(p.shape[0], -1, -1, -1)
    return F.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _masks_to_original(masks: torch.Tensor, boxes: torch.Tensor, orig_shape: tuple[int, int]) -> torch.Tensor:
    """Letterboxed masks (N, H, W) 0/1 -> (N, h0, w0) uint8: bilinear resize of the content, > 0.5, crop to the
    original-pixel boxes (N, 4); in chunks of instances so no more than ~16 M float pixels exist at once."""
    per = max(1, (1 << 24) // (orig_shape[0] * orig_shape[1]))
    out = [
        crop_mask((scale_masks(masks[k : k + per], orig_shape) > 0.5).to(torch.uint8), boxes[k : k + per])
        for k in range(0, len(masks), per)
    ]
    return torch.cat(out) if out else masks.new_zeros((0, *orig_shape))


class _WeightsFingerprint:
    """Identity and in-place version of every parameter and buffer of `modules` (all of a model's, listed once), and
    the identity of each one's children: changes when the model is trained (optimizer steps), reloaded
    (load_state_dict) or has a tensor or submodule replaced, so a cached fused copy can be detected as stale. Reads
    the modules' own dicts, gathered once: 0.33 ms per call for yolo11n-seg on 2 cores, against 0.55 ms walking the
    modules each time and 2.6 ms through parameters() / buffers()."""

    def __init__(self, modules: list[nn.Module]):
        self.tensor_dicts = [d for m in modules for d in (m._parameters, m._buffers)]
        self.children = [m._modules for m in modules]

    def __call__(self) -> tuple[list[int], list[int], list[int]]:
        tensors = [t for d in self.tensor_dicts for t in d.values()]
        return (
            [id(t) for t in tensors],
            [t._version for t in tensors if t is not None],
            [id(c) for d in self.children for c in d.values()],
        )
