"""Validation: box and mask mAP on a dataset split, as the incumbent computes them (INCUMBENT.md §5).

`run_validation` is the standalone entry (`model.val()`, `yolo segment val`); the trainer builds a `Validator` once
and calls it each epoch with its EMA model and its own val loader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sample import Batch
from ..metrics.ap import mask_iou, match_predictions
from ..metrics.confusion import ConfusionMatrix
from ..metrics.segment import DetectMetrics, SegmentMetrics
from ..ops.boxes import box_iou, scale_boxes, xywh2xyxy
from ..ops.masks import process_mask
from ..ops.nms import non_max_suppression
from ..utils.files import atomic_write_text
from ..utils.log import log
from ..utils.settings import resolve_save_dir
from ..utils.torch_utils import loader_workers, select_device
from .deferred import DeferredBranches, defer_head
from .inference import CompiledForward, forward_batched, inference_copy, inference_precision, micro_batches

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)
PLOT_CONF = 0.25  # the confusion matrix and the val_batch*_pred.jpg plots use detections at or above this
# Standalone CPU validation of at least this many images runs the model as a TorchScript graph (see
# inference.CompiledForward), made at its first micro-batch for about three forwards' time: coco128's 128 images at
# 640 took 12.72 against 13.46 s (24.7 against 26.2 s of CPU time; medians of 6 alternating runs on 2 cores).
VAL_GRAPH_MIN_IMAGES = 100


def run_validation(runner: Any, args: dict[str, Any], callbacks: dict[str, list[Callable]] | None = None):
    """Validate a YOLOModel or an exported-model backend on `args['data']`; returns SegmentMetrics/DetectMetrics."""
    from ..data.dataset import SegmentDataset
    from ..data.dataset_yaml import check_dataset
    from ..data.loader import build_dataloader

    data = check_dataset(args["data"])
    split = args.get("split") or "val"
    if not data.get(split):
        raise ValueError(f"data={args['data']}: the dataset has no '{split}' split; use split=val or split=train")
    device = select_device(args.get("device"))
    is_pt = isinstance(runner, torch.nn.Module)
    if is_pt:
        precision = inference_precision(args.get("half"), device)
        model = inference_copy(runner, device, torch.float16 if precision == "fp16" else torch.float32)
        stride = int(max(model.stride.max().item(), 32))
        imgsz = args["imgsz"] if isinstance(args["imgsz"], int) else max(args["imgsz"])
        rect = bool(args.get("rect", True))
        batch = args["batch"]
        names = model.names
    else:
        model = runner
        if hasattr(runner, "set_precision"):  # OpenVINO: half=True runs bf16 on bf16 hardware, like PyTorch
            runner.set_precision(inference_precision(args.get("half"), runner.device))
        stride = int(max(getattr(runner, "stride", 32), 32))
        dynamic = bool(getattr(runner, "dynamic", False))
        imgsz = args["imgsz"] if dynamic else max(getattr(runner, "imgsz", (args["imgsz"],) * 2))
        imgsz = imgsz if isinstance(imgsz, int) else max(imgsz)
        rect = bool(args.get("rect", True)) and dynamic
        batch = args["batch"] if dynamic else int(getattr(runner, "batch", 1))
        names = runner.names
    if len(names) != data["nc"]:
        log.warning(f"WARNING: model has {len(names)} classes, data={args['data']} has {data['nc']}")
    task = args.get("task") or getattr(runner, "task", "segment")
    dataset = SegmentDataset(
        data[split],
        imgsz=imgsz,
        augment=False,
        hyp={},
        rect=rect,
        batch_size=batch,
        stride=stride,
        pad=0.5,
        single_cls=bool(args.get("single_cls")),
        classes=args.get("classes"),
        mask_ratio=4,
        overlap_mask=True,
        nc=data["nc"],
        task=task,
    )
    workers = loader_workers(int(args.get("workers") or 0), device)
    loader = build_dataloader(dataset, batch, workers, shuffle=False, seed=args.get("seed", 0))
    save_dir = resolve_save_dir(args, "val")
    validator = Validator(args, save_dir, data["names"], task=task, callbacks=callbacks)
    validator.max_det = max(int(args.get("max_det", 300)), dataset_max_instances(dataset))
    metrics = validator(model, loader, device=device)
    log.info(f"Results saved to {save_dir}")
    return metrics


def dataset_max_instances(dataset: Any) -> int:
    """The largest per-image ground-truth count (the standalone validator raises max_det to it, as 8.4 does)."""
    store = getattr(dataset, "store", None)
    counts = store.instance_counts() if store is not None else None
    return int(np.max(counts)) if counts is not None and len(counts) else 0


NEAR_GT_PX = 16  # input pixels (4 mask pixels) of margin when deciding whether a detection's box can meet a GT mask


def _output_parts(run: Any, images: torch.Tensor, micro: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(decoded, protos or None) of `run(images)`, computed lazily per CPU micro-batch (see micro_batches) when
    `micro`, else for the whole batch at once."""
    for part in micro_batches(images) if micro else [images]:
        out = run(part)
        yield tuple(out) if isinstance(out, (tuple, list)) else (out, None)


def _completed_boxes(parts: Iterator[tuple], branches: DeferredBranches, conf: float) -> Iterator[tuple]:
    """The deferred head's outputs of each micro-batch -> (y, (P3 features, level inputs)) with the box branch run
    for the anchors that may pass `conf` (DeferredBranches.complete_boxes)."""
    for out in parts:
        branches.micro_batch = len(out[0][0])  # the batch the forward ran these maps at: its kernel choice
        yield branches.complete_boxes(out, conf)


def _near_same_class_gt(
    det: torch.Tensor, gt_cls: torch.Tensor, gt_boxes: torch.Tensor, gt_areas: torch.Tensor | None = None
) -> torch.Tensor:
    """(N,) bool: detection rows (N, 6+) whose box, widened by NEAR_GT_PX, overlaps a GT box (M, 4) of its class.

    With `gt_areas` (M,), the GT masks' areas in input pixels, also only where the mask IoU can reach the lowest
    match threshold: a detection's mask lies within its box and a GT mask within its box, each give or take a mask
    pixel, so their intersection is at most the overlap of the two boxes widened by NEAR_GT_PX, and their union at
    least the GT mask; IoU <= overlap / GT area.
    """
    if not len(gt_cls):
        return torch.zeros(len(det), dtype=torch.bool, device=det.device)
    b, g = det[:, None, :4], gt_boxes[None].to(det.dtype)
    overlap = (b[..., 0] - NEAR_GT_PX < g[..., 2]) & (b[..., 2] + NEAR_GT_PX > g[..., 0])
    overlap &= (b[..., 1] - NEAR_GT_PX < g[..., 3]) & (b[..., 3] + NEAR_GT_PX > g[..., 1])
    overlap &= det[:, 5:6] == gt_cls[None].to(det.dtype)
    if gt_areas is not None:
        lo, hi = torch.maximum(b[..., :2], g[..., :2]), torch.minimum(b[..., 2:], g[..., 2:])
        reach = (hi - lo + 2 * NEAR_GT_PX).clamp(min=0).prod(-1)  # the overlap of the widened boxes (N, M)
        overlap &= reach >= float(IOU_THRESHOLDS[0]) * gt_areas[None].to(det.dtype)
    return overlap.any(1)


class Validator:
    """Accumulates matches over a loader and turns them into metrics, tables and plots."""

    def __init__(
        self,
        args: dict[str, Any],
        save_dir: Path,
        names: dict[int, str],
        task: str = "segment",
        callbacks: dict[str, list[Callable]] | None = None,
    ):
        self.args = args
        self.save_dir = Path(save_dir)
        self.names = names
        self.nc = len(names)
        self.task = task
        self.callbacks = callbacks or {}
        self.max_det = int(args.get("max_det", 300))
        self.conf = args.get("conf") if args.get("conf") is not None else 0.001
        self.single_cls = bool(args.get("single_cls"))
        self.plots = bool(args.get("plots", True))
        self.save_json = bool(args.get("save_json"))
        self.native_masks = self.save_json or bool(args.get("save_txt"))
        self.cm_iou = args.get("cm_iou", "mask")  # ours: segment confusion matrix by mask IoU

    def _run_callbacks(self, event: str) -> None:
        for fn in self.callbacks.get(event, []):
            fn(self)

    @torch.no_grad()
    def __call__(self, model: Any, loader: Any, device: torch.device | None = None, loss_fn: Callable | None = None):
        """Validate `model` (a YOLOModel in eval mode, or a backend) over `loader`; returns the metrics object."""
        self._run_callbacks("on_val_start")
        device = device or torch.device("cpu")
        is_pt = isinstance(model, torch.nn.Module)
        precision = inference_precision(self.args.get("half"), device, warn=False)
        if is_pt:  # a PyTorch model is fed images in its own precision (fp16 after run_validation's half copy)
            half = next(model.parameters()).dtype == torch.float16
        else:
            half = precision == "fp16"
        branches = None
        if is_pt and loss_fn is None:
            images_total = len(getattr(loader, "dataset", ()))
            graphs = device.type == "cpu" and bool(self.args.get("jit", True)) and images_total >= VAL_GRAPH_MIN_IMAGES
            # on a CPU the head's box, coefficient and prototype branches run only where they are read, as when
            # predicting (engine.deferred; set before the forward traces its graph, undone when validation ends)
            head = defer_head(model) if device.type == "cpu" and self.task == "segment" else None
            forward = CompiledForward(model, self.args.get("compile"), precision == "bf16", graphs)
            branches = DeferredBranches(forward, head) if head is not None else None
        else:
            forward = model
        try:
            return self._validate(model, forward, branches, loader, device, loss_fn, is_pt, half)
        finally:
            if branches is not None:
                branches.head().defer_branches = False

    def _validate(self, model, forward, branches, loader, device, loss_fn, is_pt: bool, half: bool):
        """The loop of __call__: `forward` runs `model` (a PyTorch one, possibly with its head deferred to
        `branches`), or is `model` itself (a backend, or the training model when `loss_fn` is given)."""
        stats: dict[str, list] = {k: [] for k in ("tp", "tp_m", "conf", "pred_cls", "target_cls", "target_img")}
        confusion = ConfusionMatrix(nc=self.nc, conf=PLOT_CONF, iou_thres=0.45)
        self.jdict: list[dict] = []
        loss_sum = None
        dt = [0.0, 0.0, 0.0, 0.0]
        n_images = 0
        bf16 = isinstance(forward, CompiledForward) and forward.bf16
        dtype = torch.float16 if half else torch.bfloat16 if bf16 else torch.float32
        for bi, batch in enumerate(loader):
            t0 = time.perf_counter()
            batch = batch.to(device)
            # one fresh copy, divided in place: a second batch-sized allocation costs a 2-core CPU ~2 ms per 640 px image
            # (in bf16 under CPU bf16: the first convolution's own cast, made here while the uint8 batch is read)
            images = batch.images.to(dtype, copy=True).div_(255)
            t1 = time.perf_counter()
            if bi == 0 and isinstance(forward, CompiledForward) and forward.graphs:
                forward.prepare(images)
                setup = time.perf_counter() - t1  # a one-off, as loading the model: counted in no stage
                t0, t1 = t0 + setup, t1 + setup
            if is_pt and loss_fn is not None:
                (y, protos), raw = forward_batched(model, images, with_raw=True)
                parts = iter([(y, protos)])
            else:  # run lazily below, one micro-batch at a time
                parts = _output_parts(forward if is_pt else model, images, micro=is_pt)
                if branches is not None:
                    parts = _completed_boxes(parts, branches, self.conf)
            t2 = time.perf_counter()
            if loss_fn is not None:
                items = loss_fn(raw, batch)[1]
                loss_sum = items if loss_sum is None else loss_sum + items
            t3 = time.perf_counter()
            gts = [self._gt_for_image(si, batch, images.shape[2:]) for si in range(len(batch.images))]
            targets = [(g["cls"], g["boxes"], g.get("areas")) for g in gts]
            preds: list[dict] = []
            forward_s = 0.0  # each micro-batch's outputs are postprocessed before the next runs: the batch's outputs
            while True:  # are never concatenated (a copy of ~8 MB per 640 px image, 4-7 ms of a 2-core CPU's time)
                ta = time.perf_counter()
                part = next(parts, None)
                forward_s += time.perf_counter() - ta
                if part is None:
                    break
                y, protos = part
                first, branch_s = len(preds), branches.seconds if branches is not None else 0.0
                preds += self.postprocess(
                    y.float(), protos, images.shape[2:], targets[first : first + len(y)], branches
                )
                if branches is not None:  # the deferred branches run within postprocess count as inference
                    forward_s += branches.seconds - branch_s
            for si, pred in enumerate(preds):
                self._update_image(si, pred, gts[si], batch, images.shape[2:], stats, confusion)
                stats["target_img"].append(np.full(int((batch.batch_idx == si).sum()), n_images + si))
            t4 = time.perf_counter()
            for i, d in enumerate((t1 - t0, t2 - t1 + forward_s, t3 - t2, t4 - t3 - forward_s)):
                dt[i] += d
            n_images += len(batch.images)
            if self.plots and bi < 3:
                self._plot_batch(bi, batch, preds)
        self.loss = None if loss_sum is None else (loss_sum / max(len(loader), 1)).cpu()
        return self._finish(stats, confusion, dt, n_images, training=loss_fn is not None)

    def postprocess(
        self,
        y: torch.Tensor,
        protos: torch.Tensor | tuple | None,
        shape: tuple[int, int],
        gt_targets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None = None,
        branches: DeferredBranches | None = None,
    ) -> list[dict]:
        """NMS (multi-label in val) then masks at 1/4 input resolution (input resolution for save_json / save_txt).

        With `gt_targets` (per image: GT classes (M,), xyxy boxes (M, 4) and mask areas (M,) or None, in input
        pixels), masks are computed only where they can count: detections at or above the 0.25 confidence of the
        confusion matrix and the plots, and those whose box comes near enough a GT box of their class for the mask
        IoU to reach 0.5 (see _near_same_class_gt: a mask is cropped to its box and a GT mask lies within its box,
        give or take a mask pixel, and NEAR_GT_PX is a wide margin). The other masks stay empty; at conf 0.001 that
        skips most of the work.

        With `branches` (a deferred head, see engine.deferred), y holds the anchors that may pass conf with their
        anchor index for coefficients, and protos is (P3 features, level inputs): the kept detections' coefficients
        and the prototypes under the masks computed here are completed first.
        """
        dets = non_max_suppression(
            y,
            self.conf,
            self.args.get("iou", 0.7),
            multi_label=self.nc > 1,
            agnostic=self.single_cls or bool(self.args.get("agnostic_nms")),
            max_det=self.max_det,
            nc=self.nc,
        )
        segment = protos is not None and self.task == "segment"
        needs: list[torch.Tensor | None] = [None] * len(dets)
        if segment and gt_targets is not None and not (self.native_masks or self.single_cls):
            needs = [(det[:, 4] >= PLOT_CONF) | _near_same_class_gt(det, *gt) for det, gt in zip(dets, gt_targets)]
        if segment and branches is not None:
            p3 = protos[0]
            dets, protos = branches.complete_detections(dets, protos, shape, masked=needs)
            if protos is None:  # no mask to compute
                protos = p3.new_zeros((len(dets), branches.head().nm, 2 * p3.shape[2], 2 * p3.shape[3]))
        protos = protos.float() if segment else protos
        out = []
        for i, det in enumerate(dets):
            item = {"boxes": det[:, :4], "conf": det[:, 4], "cls": det[:, 5]}
            if segment:
                need = needs[i]
                if need is None or bool(need.all()):
                    item["masks"] = process_mask(protos[i], det[:, 6:], det[:, :4], shape, upsample=self.native_masks)
                else:
                    masks = torch.zeros((len(det), *protos.shape[2:]), dtype=torch.uint8, device=det.device)
                    masks[need] = process_mask(protos[i], det[need, 6:], det[need, :4], shape)
                    item["masks"], item["mask_rows"] = masks, need.nonzero().squeeze(1)  # the others are empty
            out.append(item)
        return out

    def _gt_for_image(self, si: int, batch: Batch, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        idx = batch.batch_idx == si
        h, w = shape
        boxes = xywh2xyxy(batch.boxes_xywhn[idx].float()) * torch.tensor([w, h, w, h], device=idx.device)
        gt = {"cls": batch.classes[idx].float(), "boxes": boxes}
        if self.task == "segment":
            if batch.overlap:
                n = int(idx.sum())
                index_map = batch.masks[si]
                ids = torch.arange(1, n + 1, device=index_map.device).view(-1, 1, 1)
                masks = (index_map.unsqueeze(0) == ids).float()
            else:
                masks = batch.masks[idx].float()
            if self.native_masks and masks.shape[1:] != shape:
                masks = F.interpolate(masks[None], shape, mode="bilinear", align_corners=False)[0].gt_(0.5).float()
            gt["masks"] = masks
            gt["areas"] = masks.flatten(1).sum(1) * (h * w / (masks.shape[1] * masks.shape[2]))  # input pixels
        return gt

    def _update_image(self, si, pred, gt, batch, shape, stats, confusion) -> None:
        n_pred, n_gt = len(pred["conf"]), len(gt["cls"])
        stats["target_cls"].append(gt["cls"].cpu().numpy())
        pred_cls = torch.zeros_like(pred["cls"]) if self.single_cls else pred["cls"]
        tp = np.zeros((n_pred, 10), dtype=bool)
        tp_m = np.zeros((n_pred, 10), dtype=bool)
        mask_ious = None
        if n_pred and n_gt:
            iouv = IOU_THRESHOLDS.to(pred_cls.device)
            tp = match_predictions(pred_cls, gt["cls"], box_iou(gt["boxes"], pred["boxes"]), iouv)
            if "masks" in pred:
                rows = pred.get("mask_rows")
                if rows is None:
                    mask_ious = mask_iou(gt["masks"].flatten(1), pred["masks"].float().flatten(1))
                else:  # the IoU of an empty mask is 0
                    mask_ious = torch.zeros(n_gt, n_pred, device=gt["masks"].device)
                    computed = pred["masks"][rows].float().flatten(1)
                    mask_ious[:, rows] = mask_iou(gt["masks"].flatten(1), computed)
                tp_m = match_predictions(pred_cls, gt["cls"], mask_ious, iouv)
        stats["tp"].append(np.asarray(tp))
        stats["tp_m"].append(np.asarray(tp_m))
        stats["conf"].append(pred["conf"].cpu().numpy())
        stats["pred_cls"].append(pred_cls.cpu().numpy())
        detections = torch.cat([pred["boxes"], pred["conf"][:, None], pred_cls[:, None]], 1)
        use_mask = self.cm_iou == "mask" and mask_ious is not None
        confusion.process_batch(detections, gt["boxes"], gt["cls"], ious=mask_ious if use_mask else None)
        if self.save_json:
            self._append_json(si, pred, batch, shape)

    def _append_json(self, si: int, pred: dict, batch: Batch, shape: tuple[int, int]) -> None:
        from ..metrics.rle import encode_masks

        path = Path(batch.paths[si])
        image_id = int(path.stem) if path.stem.isnumeric() else path.stem
        h0, w0 = batch.orig_shapes[si]
        boxes = scale_boxes(shape, pred["boxes"].clone(), (h0, w0), ratio_pad=batch.ratio_pads[si])
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        rles = encode_masks(pred.get("masks"), shape, (h0, w0), batch.ratio_pads[si]) if "masks" in pred else None
        for j in range(len(pred["conf"])):
            item = {
                "image_id": image_id,
                "category_id": int(pred["cls"][j]),
                "bbox": [round(float(v), 3) for v in xywh[j]],
                "score": round(float(pred["conf"][j]), 5),
            }
            if rles is not None:
                item["segmentation"] = rles[j]
            self.jdict.append(item)

    def _plot_batch(self, bi: int, batch: Batch, preds: list[dict]) -> None:
        try:
            from ..data.plots import plot_batch
        except ImportError:
            return
        plot_batch(batch, self.names, self.save_dir / f"val_batch{bi}_labels.jpg")
        plot_batch(batch, self.names, self.save_dir / f"val_batch{bi}_pred.jpg", preds=preds)

    def _finish(self, stats, confusion, dt, n_images, training: bool = False):
        cat = {k: np.concatenate(v, 0) if v else np.zeros(0) for k, v in stats.items()}
        metrics = SegmentMetrics(names=self.names, save_dir=self.save_dir, plot=self.plots)
        if self.task != "segment":
            metrics = DetectMetrics(names=self.names, save_dir=self.save_dir, plot=self.plots)
            metrics.process(
                cat["tp"].reshape(-1, 10), cat["conf"], cat["pred_cls"], cat["target_cls"], cat["target_img"]
            )
        else:
            tp, tp_m = cat["tp"].reshape(-1, 10), cat["tp_m"].reshape(-1, 10)
            metrics.process(tp, tp_m, cat["conf"], cat["pred_cls"], cat["target_cls"], cat["target_img"])
        n = max(n_images, 1)
        metrics.speed = {k: v * 1e3 / n for k, v in zip(("preprocess", "inference", "loss", "postprocess"), dt)}
        metrics.confusion_matrix = confusion
        self.nt_per_class = np.bincount(cat["target_cls"].astype(int), minlength=self.nc)
        self.seen = n_images
        self.nt_per_image = getattr(metrics, "nt_per_image", None)
        # during training each epoch prints its summary row only, as the incumbent does; the per-class rows and the
        # speed line come with the final validation and standalone val
        self.print_results(metrics, details=not training)
        if self.plots:
            for normalize in (True, False):
                confusion.plot(normalize=normalize, save_dir=self.save_dir, names=self.names)
        if self.save_json and self.jdict:
            atomic_write_text(self.save_dir / "predictions.json", json.dumps(self.jdict))
            log.info(f"Saved {len(self.jdict)} predictions to {self.save_dir / 'predictions.json'}")
        self._run_callbacks("on_val_end")
        return metrics

    def print_results(self, metrics: Any, details: bool = True) -> None:
        """The header and the summary row; with `details`, the per-class rows (verbose, several classes) and the
        speed line."""
        cols = ("Box(P", "R", "mAP50", "mAP50-95)") + (
            ("Mask(P", "R", "mAP50", "mAP50-95)") if self.task == "segment" else ()
        )
        log.info(("%22s" + "%11s" * 2 + "%11s" * len(cols)) % ("Class", "Images", "Instances", *cols))
        fmt = "%22s" + "%11i" * 2 + "%11.3g" * len(cols)
        log.info(fmt % ("all", self.seen, int(self.nt_per_class.sum()), *metrics.mean_results()))
        if self.nt_per_class.sum() == 0:
            log.warning("WARNING: no labels found in the val set; metrics are zero")
        if not details:
            return
        if self.args.get("verbose", True) and self.nc > 1:
            for i, c in enumerate(metrics.ap_class_index):
                images = self.nt_per_image[int(c)] if self.nt_per_image is not None else self.seen
                log.info(fmt % (self.names[int(c)], images, self.nt_per_class[int(c)], *metrics.class_result(i)))
        sp = metrics.speed
        log.info(
            f"Speed: {sp['preprocess']:.1f}ms preprocess, {sp['inference']:.1f}ms inference, "
            f"{sp['loss']:.1f}ms loss, {sp['postprocess']:.1f}ms postprocess per image"
        )
