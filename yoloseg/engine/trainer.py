"""Training: one Trainer holding the state; `fit()` reads as train epoch -> validate -> callbacks -> checkpoint."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from ..metrics.segment import DetectMetrics, SegmentMetrics
from ..nn.checkpoint import intersect_state_dicts, load_checkpoint, save_checkpoint
from ..nn.graph import YOLOModel
from ..utils.files import atomic_copy, atomic_write_text
from ..utils.log import log
from ..utils.settings import resolve_save_dir
from ..utils.torch_utils import end_deterministic, loader_workers, seed_everything, select_device
from . import distributed
from .inference import compile_mode, cpu_bf16_supported, inference_copy
from .optim import ModelEMA, build_optimizer, lr_lambda, unwrap, warmup
from .saving import make_checkpoint, plain_args, rng_state, set_rng_state, strip_checkpoint
from .validator import Validator

LOSS_NAMES = {
    "segment": ("box_loss", "seg_loss", "cls_loss", "dfl_loss"),
    "detect": ("box_loss", "cls_loss", "dfl_loss"),
}
MAX_BAD_STEPS = 3  # consecutive non-finite losses before reloading last.pt with a lower learning rate


def training_precision(amp: Any, device: torch.device) -> tuple[bool, torch.dtype]:
    """(autocast on, its dtype) for an `amp=` value: on CUDA true/fp16 (with a grad scaler) or bf16; on a CPU fp32, as
    the incumbent, unless amp=bf16 asks for bf16 autocast, which needs bf16 matrix hardware (AMX / AVX512-BF16):
    without it bf16 is emulated and slower than fp32, so it warns and trains fp32."""
    want = str(amp).lower()
    dtype = torch.bfloat16 if want == "bf16" else torch.float16
    if device.type == "cuda":
        return bool(amp) and want not in ("false", "fp32"), dtype
    if device.type != "cpu" or want != "bf16":
        return False, dtype
    if not cpu_bf16_supported():
        log.warning("WARNING: amp=bf16 on a CPU without bf16 hardware (AMX / AVX512-BF16): training fp32")
        return False, dtype
    return True, dtype


class Trainer:
    """Holds model, EMA, optimizer, scheduler, data and run outputs for one training run.

    Fitness (what selects best.pt and drives early stopping) = box mAP50-95 + mask mAP50-95 of the EMA model on the
    val split (box only for detect models), as the incumbent's 8.4 line defines it.
    """

    def __init__(
        self,
        args: dict[str, Any],
        model: YOLOModel | None = None,
        ckpt: dict[str, Any] | None = None,
        callbacks: dict[str, list[Callable]] | None = None,
    ):
        self.args = dict(args)
        self.callbacks = callbacks or {}
        self.rank = int(os.environ.get("RANK", -1))
        self.is_main = self.rank in (-1, 0)
        self.resume_ckpt = self._resume_checkpoint()
        if self.resume_ckpt is not None:
            keep = {k: self.args[k] for k in ("device", "workers") if args.get(k) is not None}
            self.args = {**self.resume_ckpt["train_args"], **keep, "resume": True}
            self.args.setdefault("task", self.resume_ckpt.get("task", "segment"))
        self.task = self.args.get("task") or (model.task if model is not None else "segment")
        self.device = select_device(self.args.get("device"))
        self.workers = loader_workers(int(self.args.get("workers") or 0), self.device)
        self.save_dir = self._save_dir()
        self.wdir = self.save_dir / "weights"
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        self.model = model
        self.init_ckpt = ckpt or {}
        self.metrics: Any = None
        self.fitness: float | None = None
        self.best_fitness: float | None = None
        self.start_epoch = 0
        self.epoch = 0
        self.csv_rows: list[dict[str, float]] = []
        self.stop = False
        self.mosaic_closed = False

    # ----------------------------------------------------------------------------------------------- setup
    def _resume_checkpoint(self) -> dict[str, Any] | None:
        resume = self.args.get("resume")
        if not resume:
            return None
        if resume is True or str(resume).lower() == "true":
            path = Path(str(self.args.get("model") or ""))
            if path.suffix != ".pt" or not path.is_file():
                raise FileNotFoundError(
                    "resume=True needs model=path/to/last.pt (or resume=path/to/last.pt); "
                    f"'{self.args.get('model')}' is not a checkpoint file"
                )
        else:
            path = Path(str(resume))
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != "yoloseg" or "optimizer" not in ckpt or ckpt.get("epoch", -1) < 0:
            raise ValueError(f"{path} cannot be resumed: it is a finished (stripped) or foreign checkpoint")
        ckpt["resume_path"] = str(path)
        return ckpt

    def _save_dir(self) -> Path:
        if self.resume_ckpt is not None:
            return Path(self.resume_ckpt["resume_path"]).resolve().parents[1]
        if not self.is_main:
            return Path(self.args.get("save_dir") or "runs/ddp")
        return resolve_save_dir(self.args, "train")

    def _run_callbacks(self, event: str) -> None:
        for fn in self.callbacks.get(event, []):
            fn(self)

    def _setup_data(self) -> None:
        from ..data.dataset import SegmentDataset
        from ..data.dataset_yaml import check_dataset
        from ..data.loader import build_dataloader

        a = self.args
        self.data = check_dataset(a["data"])
        names = {0: "item"} if a.get("single_cls") else self.data["names"]
        self.names, self.nc = names, len(names)
        common = dict(
            stride=32,
            single_cls=bool(a.get("single_cls")),
            classes=a.get("classes"),
            mask_ratio=a["mask_ratio"],
            overlap_mask=a["overlap_mask"],
            nc=self.data["nc"],
            task=self.task,
        )
        world = max(int(os.environ.get("WORLD_SIZE", 1)), 1)
        self.batch_size = max(a["batch"] // world, 1)
        self.train_set = SegmentDataset(
            self.data["train"],
            imgsz=a["imgsz"],
            augment=True,
            hyp=a,  # the dataset picks the augmentation keys it knows
            rect=bool(a.get("rect")),
            batch_size=self.batch_size,
            pad=0.0,
            cache=a.get("cache", False),
            fraction=a.get("fraction", 1.0),
            seed=a.get("seed", 0),
            **common,
        )
        self.train_loader = build_dataloader(
            self.train_set,
            self.batch_size,
            self.workers,
            shuffle=not a.get("rect"),
            seed=a.get("seed", 0),
            rank=self.rank,
        )
        self.val_loader = None
        if self.is_main:
            val_batch = self.batch_size * 2
            self.val_set = SegmentDataset(
                self.data["val"], imgsz=a["imgsz"], augment=False, hyp={}, rect=True, batch_size=val_batch, pad=0.5,
                cache=a.get("cache", False), **common,
            )  # fmt: skip
            self.val_loader = build_dataloader(self.val_set, val_batch, self.workers, shuffle=False, seed=0)

    def _setup_model(self) -> None:
        """Build the network after seeding (so the same seed gives the same initial weights), then transfer weights
        from the loaded checkpoint (when the facade loaded a .pt) and from `pretrained=path`."""
        a = self.args
        if self.resume_ckpt is not None:
            model = YOLOModel(self.resume_ckpt["yaml"])
        else:
            cfg = self.model.yaml if self.model is not None else a["model"]
            model = YOLOModel(cfg, nc=self.nc)
            if self.model is not None and self.init_ckpt and a.get("pretrained") is not False:
                matched = intersect_state_dicts(self.model.state_dict(), model.state_dict())
                model.load_state_dict(matched, strict=False)
                log.info(f"Transferred {len(matched)}/{len(model.state_dict())} items from the loaded weights")
        pretrained = a.get("pretrained")
        if isinstance(pretrained, str) and pretrained not in ("True", "False") and self.resume_ckpt is None:
            from ..utils.weights import resolve_weights

            src = load_checkpoint(resolve_weights(pretrained))["state_dict"]
            matched = intersect_state_dicts(src, model.state_dict())
            model.load_state_dict(matched, strict=False)
            log.info(f"Transferred {len(matched)}/{len(model.state_dict())} items from pretrained weights {pretrained}")
        model.names = dict(self.names)
        model.args = plain_args(a)
        self._freeze(model, a.get("freeze"))
        model = model.to(self.device).float().train()
        # oneDNN trains ~20% faster in channels-last (NHWC) on a CPU; the state dict's values are unchanged
        self.channels_last = self.device.type == "cpu"
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model

    @staticmethod
    def _freeze(model: nn.Module, freeze: Any) -> None:
        """Freeze the DFL projection always, plus the first N layers (int) or the listed layer indices."""
        if freeze is None:
            layers: list[int] = []
        elif isinstance(freeze, int):
            layers = list(range(freeze))
        else:
            layers = [int(x) for x in freeze]
        prefixes = tuple(f"model.{i}." for i in layers)
        for name, p in model.named_parameters():
            if ".dfl" in name or name.startswith(prefixes):
                p.requires_grad_(False)
            elif p.is_floating_point():
                p.requires_grad_(True)

    def _setup_optim(self) -> None:
        from ..loss import DetectionLoss, SegmentationLoss

        a = self.args
        self.accumulate = max(round(a["nbs"] / (self.batch_size * max(int(os.environ.get("WORLD_SIZE", 1)), 1))), 1)
        decay = a["weight_decay"] * self.batch_size * self.accumulate / a["nbs"]
        iterations = math.ceil(len(self.train_set) / max(a["batch"], a["nbs"])) * a["epochs"]
        self.optimizer, resolved = build_optimizer(
            self.model, a["optimizer"], a["lr0"], a["momentum"], decay, iterations, self.nc
        )
        self.momentum = resolved["momentum"]
        self.warmup_bias_lr = resolved.get("warmup_bias_lr", a["warmup_bias_lr"])
        self.lf = lr_lambda(a["epochs"], a["lrf"], bool(a.get("cos_lr")))
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)
        self.ema = ModelEMA(self.model) if self.is_main else None  # before any DDP wrapping
        self.amp, self.amp_dtype = training_precision(a.get("amp", True), self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        loss_cls = SegmentationLoss if self.task == "segment" else DetectionLoss
        kw = {"overlap": a["overlap_mask"]} if self.task == "segment" else {}
        self.loss_fn = loss_cls(unwrap(self.model), box=a["box"], cls=a["cls"], dfl=a["dfl"], **kw)
        # compile= is the training forward's (TrainingForward): validation, each epoch's and the final one, runs as
        # standalone val does by default, not through a compile of its own for every new batch shape
        self.validator = Validator(
            {**a, "conf": None, "plots": False, "compile": False}, self.save_dir, self.names, self.task, self.callbacks
        )

    def _restore(self) -> None:
        ckpt = self.resume_ckpt
        if ckpt is None:
            return
        self.model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model_state"].items()}
        )
        self.ema.ema.load_state_dict(ckpt["state_dict"])
        self.ema.updates = int(ckpt["updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.best_fitness = ckpt.get("best_fitness")
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.scheduler.last_epoch = self.start_epoch - 1
        self.csv_rows = list(ckpt.get("train_results") or [])
        self.bad_epochs = int(ckpt.get("bad_epochs", 0))
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        log.info(f"Resuming training from {ckpt['resume_path']} at epoch {self.start_epoch + 1}")

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self) -> None:
        a = self.args
        self._run_callbacks("on_pretrain_routine_start")
        if self.rank != -1 and distributed.world_size() > 1:
            self.device = distributed.init_process_group(self.device)
            if not self.is_main:  # a launcher-spawned worker process: only rank 0 reports progress
                logging.getLogger("yoloseg").setLevel(logging.WARNING)
        seed_everything(int(a.get("seed", 0)) + 1 + max(self.rank, 0), bool(a.get("deterministic")))
        self._setup_data()
        self._setup_model()
        self._setup_optim()
        if self.rank != -1 and distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward = TrainingForward(self.model, a.get("compile"))
        self.bad_epochs = 0
        self._restore()
        if self.is_main:
            self.wdir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self.save_dir / "args.yaml",
                yaml.safe_dump(plain_args({**a, "save_dir": str(self.save_dir)}), sort_keys=False),
            )
            self._plot_labels()
        self._run_callbacks("on_pretrain_routine_end")
        self.t0 = time.time()
        self._run_callbacks("on_train_start")
        log.info(f"Logging results to {self.save_dir}\nStarting training for {a['epochs']} epochs...")
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, a["epochs"]):
            self.epoch = epoch
            self._run_callbacks("on_train_epoch_start")
            if epoch >= a["epochs"] - a["close_mosaic"] and not self.mosaic_closed:
                self.train_set.close_mosaic()  # also when a resumed run starts inside the last epochs
                self.mosaic_closed = True
                log.info("Closing mosaic, mixup and copy-paste for the last epochs")
            tloss = self.train_one_epoch(epoch)
            self._run_callbacks("on_train_epoch_end")
            with warnings.catch_warnings():  # AMP's scaler skips the optimizer step on overflowing gradients (the
                # first steps, while it calibrates): torch then warns that the schedule stepped first, which is meant
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
                self.scheduler.step()
            if self.is_main:
                final = epoch + 1 == a["epochs"]
                self.metrics, vloss = self.validate() if a.get("val", True) or final else (self.metrics, None)
                self._log_epoch(epoch, tloss, vloss)
                self._update_stopping(epoch)
                if a.get("save", True) or final:
                    self.save_model(epoch)
                self._run_callbacks("on_fit_epoch_end")
            self.stop = self._broadcast_stop(self.stop or self._time_up())
            if self.stop:
                break
        if self.is_main:
            self._final_eval()
            self._run_callbacks("on_train_end")
        if bool(a.get("deterministic")):
            end_deterministic()
        distributed.cleanup()

    def train_one_epoch(self, epoch: int) -> torch.Tensor:
        a = self.args
        self.model.train()
        self.train_set.set_epoch(epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        nb = len(self.train_loader)
        nw = max(round(a["warmup_epochs"] * nb), 100) if a["warmup_epochs"] > 0 else -1
        nw = min(nw, a["epochs"] * nb - 1) if nw > 0 else nw  # never longer than the run (same on resume)
        names = LOSS_NAMES[self.task]
        tloss = torch.zeros(len(names), device=self.device)
        if self.is_main:
            log.info(("\n" + "%11s" * (4 + len(names))) % ("Epoch", "GPU_mem", *names, "Instances", "Size"))
        bar = tqdm(self.train_loader, total=nb, disable=not self.is_main, bar_format="{l_bar}{bar:10}{r_bar}")
        self.optimizer.zero_grad()
        last_step = nb * epoch - 1  # the first step comes after `accumulate` batches
        pending = False  # gradients accumulated since the last optimizer step
        for i, batch in enumerate(bar):
            self._run_callbacks("on_train_batch_start")
            ni = i + nb * epoch
            if ni <= nw:
                warmup(self.optimizer, ni, nw, epoch, self.lf, self.warmup_bias_lr, a["warmup_momentum"], self.momentum)
                self.accumulate = max(1, int(np.interp(ni, [0, nw], [1, a["nbs"] / a["batch"]]).round()))
            batch = batch.to(self.device, non_blocking=True)
            layout = torch.channels_last if self.channels_last else torch.preserve_format
            images = batch.images.to(torch.float32, memory_format=layout, copy=True).div_(255)  # one copy, one pass
            forward, compiled = self.forward.pick(images)
            try:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    loss, items = self.loss_fn(forward(images), batch)
                finite = bool(torch.isfinite(loss))
                if finite:
                    self.scaler.scale(loss).backward()
            except Exception as e:
                if not compiled:
                    raise
                if isinstance(self.model, nn.parallel.DistributedDataParallel):  # a rank that skipped a batch alone
                    raise RuntimeError(
                        f"compile={a['compile']!r} failed in DDP training; train with compile=False"
                    ) from e
                self.forward.disable(e)  # torch.compile failed (forward or backward): this batch is skipped
                self.optimizer.zero_grad()
                pending = False
                continue
            if not finite:
                self._non_finite(i, epoch)  # also drops the gradients accumulated so far
                pending = False
                continue
            self.bad_steps = 0
            pending = True
            if ni - last_step >= self.accumulate:
                self.optimizer_step()
                last_step, pending = ni, False
            tloss = (tloss * i + items.to(self.device)) / (i + 1)
            if self.is_main:
                mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
                bar.set_description(
                    ("%11s" * 2 + "%11.4g" * (2 + len(names)))
                    % (f"{epoch + 1}/{a['epochs']}", mem, *tloss.tolist(), len(batch.classes), images.shape[-1])
                )
                if ni < 3 and a.get("plots", True):
                    self._plot_train_batch(batch, ni)
            self._run_callbacks("on_train_batch_end")
        if pending:  # the epoch's last batches: step on them rather than drop them (an epoch ends with no
            self.optimizer_step()  # pending gradient, so a resumed run continues exactly)
        bar.close()
        self.lr = {f"lr/pg{i}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        return tloss

    def optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)

    def _non_finite(self, i: int, epoch: int) -> None:
        """Skip the step; after MAX_BAD_STEPS in a row reload last.pt and halve the learning rate."""
        self.optimizer.zero_grad()
        self.bad_steps = getattr(self, "bad_steps", 0) + 1
        log.warning(f"WARNING: non-finite loss at epoch {epoch + 1} batch {i}; step skipped")
        if self.bad_steps >= MAX_BAD_STEPS:
            if self.last.exists():
                ckpt = load_checkpoint(self.last)
                self.model.load_state_dict(ckpt.get("model_state") or ckpt["state_dict"])
                if self.ema is not None:
                    self.ema.ema.load_state_dict(ckpt["state_dict"])
                log.warning(f"WARNING: reloaded {self.last} after {self.bad_steps} non-finite losses")
            for g in self.optimizer.param_groups:
                g["initial_lr"] *= 0.5
                g["lr"] *= 0.5
            log.warning("WARNING: learning rate halved to recover from non-finite losses")
            self.bad_steps = 0

    # ------------------------------------------------------------------------------------------ evaluate / log
    def validate(self) -> tuple[Any, torch.Tensor | None]:
        model = self.ema.ema if self.ema is not None else unwrap(self.model)
        # a BN-fused (channels-last on CPU) copy, as standalone val uses: ~25% less inference time per epoch
        model = inference_copy(model, self.device)
        metrics = self.validator(model, self.val_loader, device=self.device, loss_fn=self.loss_fn)
        self.fitness = float(metrics.fitness)
        if self.best_fitness is None or self.fitness > self.best_fitness:
            self.best_fitness = self.fitness
        return metrics, self.validator.loss

    def _log_epoch(self, epoch: int, tloss: torch.Tensor, vloss: torch.Tensor | None) -> None:
        names = LOSS_NAMES[self.task]
        row: dict[str, float] = {"epoch": epoch + 1, "time": round(time.time() - self.t0, 3)}
        row.update({f"train/{n}": round(float(v), 5) for n, v in zip(names, tloss)})
        values = self.metrics.results_dict if self.metrics is not None else {}
        metric_cls = SegmentMetrics if self.task == "segment" else DetectMetrics
        row.update({k: round(float(values.get(k, 0.0)), 5) for k in metric_cls(names=self.names).keys})
        vl = vloss.tolist() if vloss is not None else [0.0] * len(names)
        row.update({f"val/{n}": round(float(v), 5) for n, v in zip(names, vl)})
        row.update({k: round(float(v), 8) for k, v in self.lr.items()})
        self.csv_rows.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(self.csv_rows)
        atomic_write_text(self.save_dir / "results.csv", buf.getvalue())
        if self.args.get("plots", True):
            from .plots import plot_results

            plot_results(self.save_dir / "results.csv")

    def _update_stopping(self, epoch: int) -> None:
        improved = self.fitness is not None and self.fitness >= (self.best_fitness or 0)
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.bad_epochs >= self.args["patience"]:
            log.info(f"Stopping early: no improvement in the last {self.args['patience']} epochs")
            self.stop = True

    def _time_up(self) -> bool:
        hours = self.args.get("time")
        return bool(hours) and (time.time() - self.t0) > hours * 3600

    def _broadcast_stop(self, stop: bool) -> bool:
        if self.rank == -1 or not torch.distributed.is_initialized():
            return stop
        flag = torch.tensor([int(stop)], device=self.device)
        torch.distributed.broadcast(flag, 0)
        return bool(flag.item())

    def save_model(self, epoch: int) -> None:
        ckpt = make_checkpoint(
            self.ema.ema,
            train_args=self.args,
            epoch=epoch,
            best_fitness=self.best_fitness,
            fitness=self.fitness,
            metrics={k: float(v) for k, v in (self.metrics.results_dict if self.metrics else {}).items()},
            model_state={k: v.detach().clone().cpu() for k, v in unwrap(self.model).state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            updates=self.ema.updates,
            rng=rng_state(),
            train_results=self.csv_rows,
            bad_epochs=self.bad_epochs,
        )
        save_checkpoint(self.last, ckpt)
        # best.pt and the periodic copies hold the same checkpoint: copying last.pt's bytes beats serialising again
        if self.fitness is not None and self.fitness == self.best_fitness:
            atomic_copy(self.last, self.best)
        period = self.args.get("save_period", -1)
        if period and period > 0 and (epoch + 1) % period == 0:
            atomic_copy(self.last, self.wdir / f"epoch{epoch + 1}.pt")
        self._run_callbacks("on_model_save")

    def _final_eval(self) -> None:
        for f in (self.last, self.best):
            if f.exists():
                strip_checkpoint(f)
        if self.best.exists():
            log.info(f"\nValidating {self.best}...")
            ckpt = load_checkpoint(self.best)
            model = YOLOModel(ckpt["yaml"])
            model.load_state_dict(ckpt["state_dict"])
            model.names = self.names
            model = inference_copy(model, self.device)
            self.validator.plots = bool(self.args.get("plots", True))
            self.metrics = self.validator(model, self.val_loader, device=self.device)
        minutes = (time.time() - self.t0) / 60
        log.info(f"{self.epoch - self.start_epoch + 1} epochs completed in {minutes:.2f} minutes.")
        log.info(f"Results saved to {self.save_dir}\nWeights: {self.best} (best), {self.last} (last)")

    def _plot_labels(self) -> None:
        if not self.args.get("plots", True):
            return
        try:
            from ..data.plots import plot_labels

            plot_labels(self.train_set, self.names, self.save_dir)
        except (ImportError, AttributeError, TypeError) as e:
            log.warning(f"WARNING: labels.jpg not written: {e}")

    def _plot_train_batch(self, batch, ni: int) -> None:
        try:
            from ..data.plots import plot_batch

            plot_batch(batch, self.names, self.save_dir / f"train_batch{ni}.jpg")
        except ImportError:
            pass


class TrainingForward:
    """The training forward of `model` (the module the trainer steps, DDP-wrapped or not), through torch.compile when
    `compile` asks for it (True or a mode name; the incumbent's 8.4 `compile` train argument).

    Only batches of the shape of the first one run compiled: another shape (an epoch's smaller last batch, the sizes
    of multi_scale) runs eagerly rather than compiling again (yolo11n-seg's forward and backward took 70-140 s to
    compile on 2 CPU cores; they then ran 13% faster alone at batch 16 and 256 px, but the shapes recipe's epochs, with
    their loss, optimizer and loading, took as long as eager ones: bench/results/train-compile-ab-*). A compiler
    failure, in the forward or in the backward of a compiled step, warns once and leaves training eager (`disable`;
    under DDP it stops training instead: the other ranks would wait on that batch's gradients); the model, its EMA
    and its checkpoints are the plain module's throughout.
    """

    def __init__(self, model: nn.Module, compile: Any = None):
        self.model, self.mode = model, compile_mode(compile)
        self.compiled = None
        if self.mode is not None:
            self.compiled = torch.compile(model, mode=None if self.mode == "default" else self.mode)
        self.shape: tuple[int, ...] | None = None

    def pick(self, images: torch.Tensor) -> tuple[Callable, bool]:
        """The forward for `images` and whether it is the compiled one (the first batch fixes the compiled shape)."""
        if self.compiled is None:
            return self.model, False
        if self.shape is None:
            self.shape = tuple(images.shape)
        return (self.compiled, True) if tuple(images.shape) == self.shape else (self.model, False)

    def disable(self, error: BaseException) -> None:
        log.warning(
            f"WARNING: compile={self.mode!r} failed in training ({type(error).__name__}: {error}); training eagerly"
        )
        self.compiled = None
