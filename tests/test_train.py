"""Training end to end on a tiny generated dataset: outputs, checkpoints, determinism, kill-and-resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from yoloseg import YOLO
from yoloseg.data.synthetic import generate_shapes

SEG_COLUMNS = [
    "epoch",
    "time",
    "train/box_loss",
    "train/seg_loss",
    "train/cls_loss",
    "train/dfl_loss",
    "metrics/precision(B)",
    "metrics/recall(B)",
    "metrics/mAP50(B)",
    "metrics/mAP50-95(B)",
    "metrics/precision(M)",
    "metrics/recall(M)",
    "metrics/mAP50(M)",
    "metrics/mAP50-95(M)",
    "val/box_loss",
    "val/seg_loss",
    "val/cls_loss",
    "val/dfl_loss",
    "lr/pg0",
    "lr/pg1",
    "lr/pg2",
]
TINY = dict(imgsz=64, batch=4, nbs=4, workers=0, plots=False, seed=3, close_mosaic=2, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "tiny", n_train=8, n_val=4, imgsz=64, seed=1)


def _rows(csv_file: Path) -> list[dict[str, str]]:
    with open(csv_file, newline="") as f:
        return list(csv.DictReader(f))


def _metric_rows(csv_file: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in _rows(csv_file)]


def test_train_outputs_and_checkpoints(tiny_data, tmp_path, log_messages):
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="run", **{**TINY, "plots": True})
    run = tmp_path / "run"
    # each epoch's validation prints its summary row only; the final one (best.pt) the per-class rows and the speed
    names = set(yaml.safe_load(Path(tiny_data).read_text())["names"].values())
    summaries = [i for i, m in enumerate(log_messages) if m.split()[:1] == ["all"]]
    class_rows = [i for i, m in enumerate(log_messages) if m.split()[:1] and m.split()[0] in names]
    assert len(summaries) == 3 and class_rows and min(class_rows) > summaries[-1]
    speed = [i for i, m in enumerate(log_messages) if m.startswith("Speed:")]
    assert len(speed) == 1 and speed[0] > summaries[-1]
    assert (run / "args.yaml").is_file()
    rows = _rows(run / "results.csv")
    assert list(rows[0]) == SEG_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["train/seg_loss"]) > 0 for r in rows)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "weights" / name, weights_only=True)
        assert ckpt["format"] == "yoloseg" and "optimizer" not in ckpt
        assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert (run / "results.png").is_file() and (run / "labels.jpg").is_file()
    assert (run / "train_batch0.jpg").is_file() and (run / "val_batch0_pred.jpg").is_file()
    # the facade now holds best.pt; val remembers data and imgsz
    nc = len(yaml.safe_load(Path(tiny_data).read_text())["names"])
    assert model.ckpt_path.endswith("best.pt") and model.model.nc == nc
    metrics = model.val(project=str(tmp_path), name="val", plots=False)
    assert 0.0 <= metrics.seg.map <= 1.0 and len(metrics.seg.maps) == nc


def test_same_seed_gives_identical_results(tiny_data, tmp_path):
    for name in ("a", "b"):
        YOLO("yolo11n-seg.yaml").train(data=str(tiny_data), epochs=2, project=str(tmp_path), name=name, **TINY)
    assert _metric_rows(tmp_path / "a" / "results.csv") == _metric_rows(tmp_path / "b" / "results.csv")


RUNNER = textwrap.dedent(
    f"""
    import sys, time
    from yoloseg import YOLO

    data, project, name, kill_epoch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    resume = sys.argv[5] if len(sys.argv) > 5 else None
    model = YOLO(resume) if resume else YOLO("yolo11n-seg.yaml")

    def pause_mid_epoch(trainer):  # after the first batch of epoch `kill_epoch`: the parent kills us here
        if trainer.epoch == kill_epoch:
            print("READY-TO-KILL", flush=True)
            time.sleep(120)

    model.add_callback("on_train_batch_end", pause_mid_epoch)
    if resume:
        model.train(resume=True)
    else:
        model.train(data=data, epochs=3, project=project, name=name, **{TINY!r})
    """
)


def test_kill_and_resume_matches_uninterrupted_run(tiny_data, tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, str(script), str(tiny_data), str(tmp_path), "full", "-1"], check=True, env=env)
    proc = subprocess.Popen(
        # killed in epoch 3 (index 2), after mosaic closed at index 1: the resumed run must close it again
        [sys.executable, str(script), str(tiny_data), str(tmp_path), "killed", "2"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 300
    for line in proc.stdout:
        if "READY-TO-KILL" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = tmp_path / "killed" / "weights" / "last.pt"
    assert last.is_file() and len(_rows(tmp_path / "killed" / "results.csv")) == 2
    subprocess.run([sys.executable, str(script), "", "", "", "-1", str(last)], check=True, env=env)
    assert _metric_rows(tmp_path / "killed" / "results.csv") == _metric_rows(tmp_path / "full" / "results.csv")


def test_gradient_accumulation_uses_every_batch(tiny_data, tmp_path):
    """8 images, batch 3 (3 batches per epoch), nbs 6 (accumulate 2): a step after batches 2 and 3 of each epoch,
    none dropped at the epoch's end, and no gradient left over into the next epoch."""
    seen = []

    def on_train_epoch_end(trainer):
        leftover = any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())
        seen.append((trainer.ema.updates, trainer.accumulate, leftover))

    model = YOLO("yolo11n-seg.yaml")
    model.add_callback("on_train_epoch_end", on_train_epoch_end)
    cfg = {**TINY, "batch": 3, "nbs": 6, "warmup_epochs": 0, "val": False}
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="acc", **cfg)
    assert seen == [(2, 2, False), (4, 2, False)]


def test_non_finite_loss_skips_steps_then_reloads_and_lowers_lr(tiny_data, tmp_path, monkeypatch, log_messages):
    from yoloseg.loss import SegmentationLoss

    original = SegmentationLoss.__call__
    calls = {"n": 0}

    def flaky(self, preds, batch):
        loss, items = original(self, preds, batch)
        if not torch.is_grad_enabled():  # validation losses
            return loss, items
        calls["n"] += 1
        if 3 <= calls["n"] <= 5:  # three non-finite training losses in a row (2 batches per epoch)
            return loss * float("nan"), items
        return loss, items

    monkeypatch.setattr(SegmentationLoss, "__call__", flaky)
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(tiny_data), epochs=3, project=str(tmp_path), name="nan", **TINY)
    assert sum("non-finite loss at epoch" in m for m in log_messages) == 3
    assert any("reloaded" in m for m in log_messages) and any("halved" in m for m in log_messages)
    ckpt = torch.load(tmp_path / "nan" / "weights" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert [int(r["epoch"]) for r in _rows(tmp_path / "nan" / "results.csv")] == [1, 2, 3]


def test_training_options_single_cls_freeze_save_period_cache(tiny_data, tmp_path):
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.utils.torch_utils import seed_everything

    opts = {**TINY, "single_cls": True, "freeze": 1, "save_period": 1, "cache": "ram", "fraction": 0.5}
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="opts", **opts)
    run = tmp_path / "opts"
    assert (run / "weights" / "epoch1.pt").is_file() and (run / "weights" / "epoch2.pt").is_file()
    for n in (1, 2):  # full training checkpoints of their epochs (copies of last.pt then), not the stripped release
        periodic = torch.load(run / "weights" / f"epoch{n}.pt", weights_only=True)
        assert periodic["epoch"] == n - 1 and "optimizer" in periodic
    assert model.model.nc == 1 and model.names == {0: "item"}
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["train_args"]["single_cls"] is True and ckpt["train_args"]["freeze"] == 1
    # the trainer builds the network right after seeding with seed + 1: rebuild it to get the initial weights
    seed_everything(TINY["seed"] + 1)
    initial = YOLOModel("yolo11n-seg.yaml", nc=1).state_dict()
    final = ckpt["state_dict"]
    for key in ("model.0.conv.weight", "model.0.bn.weight", "model.0.bn.bias"):  # frozen layer 0: unchanged
        assert torch.allclose(final[key].float(), initial[key].half().float()), key
    assert not torch.allclose(final["model.1.conv.weight"].float(), initial["model.1.conv.weight"].half().float())


def test_amp_bf16_on_a_cpu_with_bf16_hardware_trains_in_bf16_autocast(tiny_data, tmp_path, monkeypatch):
    """amp=bf16 on a CPU with AMX / AVX512-BF16 (forced here; bf16 is emulated, so slow) runs the forward and loss
    under bf16 autocast: bf16 convolutions, fp32 weights and finite losses; amp=True stays fp32 on a CPU."""
    import yoloseg.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_bf16_supported", lambda: True)
    seen = {}
    conv_forward = torch.nn.Conv2d._conv_forward

    def spy(self, x, weight, bias):
        out = conv_forward(self, x, weight, bias)
        if torch.is_grad_enabled():  # training steps, not validation
            seen.setdefault("dtypes", set()).add(out.dtype)
            seen.setdefault("weights", set()).add(self.weight.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path), name="bf16", amp="bf16", **TINY)
    assert seen["dtypes"] == {torch.bfloat16} and seen["weights"] == {torch.float32}
    row = _rows(tmp_path / "bf16" / "results.csv")[0]
    assert all(torch.isfinite(torch.tensor(float(row[k]))) for k in SEG_COLUMNS[2:6])
    assert trainer_module.training_precision(True, torch.device("cpu")) == (False, torch.float16)


def test_amp_bf16_on_a_cpu_without_bf16_hardware_warns_and_trains_fp32(monkeypatch, log_messages):
    import yoloseg.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_bf16_supported", lambda: False)
    assert trainer_module.training_precision("bf16", torch.device("cpu")) == (False, torch.bfloat16)
    assert any("amp=bf16 on a CPU without bf16 hardware" in m and "training fp32" in m for m in log_messages)
    assert trainer_module.training_precision("bf16", torch.device("cuda")) == (True, torch.bfloat16)
    assert trainer_module.training_precision(True, torch.device("cuda")) == (True, torch.float16)
    assert trainer_module.training_precision(False, torch.device("cuda"))[0] is False


def test_cpu_loader_workers_count_the_pinned_cpus(monkeypatch):
    """Workers only take the CPUs torch's threads leave free among those the process may use (taskset / cpuset),
    not among all the machine's: pinned to 2 CPUs with 2 threads, loading runs in the main process."""
    from yoloseg.utils import torch_utils

    monkeypatch.setattr(torch_utils.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch_utils.torch, "get_num_threads", lambda: 2)
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch_utils.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert torch_utils.loader_workers(2, cpu) == 0
    monkeypatch.setattr(torch_utils.os, "sched_getaffinity", lambda pid: set(range(5)), raising=False)
    assert torch_utils.loader_workers(2, cpu) == 2
    assert torch_utils.loader_workers(8, cpu) == 3
    assert torch_utils.loader_workers(8, torch.device("cuda", 0)) == 8


def _fake_compile(calls: list, fail: str | None = None):
    """A stand-in for torch.compile (which takes minutes on yoloseg's models): records what it compiled and each
    compiled call's batch size, and runs the module itself, or fails in the forward or the backward."""

    class FailingBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("backward compiler error")

    def compile(module, mode=None, **kwargs):
        calls.append(("compile", module, mode))

        def run(x):
            calls.append(("call", len(x)))
            if fail == "forward":
                raise RuntimeError("forward compiler error")
            out = module(x)
            if fail == "backward":
                out = torch.utils._pytree.tree_map(
                    lambda t: FailingBackward.apply(t) if isinstance(t, torch.Tensor) and t.requires_grad else t, out
                )
            return out

        return run

    return compile


def test_compile_trains_full_batches_compiled_and_the_rest_eagerly(tiny_data, tmp_path, monkeypatch):
    """compile=True (the incumbent's 8.4 train argument) runs the training forward through torch.compile for batches of
    the first batch's shape; an epoch's smaller last batch runs eagerly instead of compiling again. The arithmetic is
    the model's own: the same losses and weights as without it, and plain checkpoints."""
    cfg = {**TINY, "batch": 3, "nbs": 3, "warmup_epochs": 0, "val": False}  # 8 images: batches of 3, 3 and 2
    YOLO("yolo11n-seg.yaml").train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="eager", **cfg)
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls))
    model = YOLO("yolo11n-seg.yaml")
    model.train(data=str(tiny_data), epochs=2, project=str(tmp_path), name="compiled", compile=True, **cfg)
    assert [c[0] for c in calls].count("compile") == 1 and calls[0][2] is None
    assert isinstance(calls[0][1], torch.nn.Module)
    assert [c[1] for c in calls if c[0] == "call"] == [3, 3, 3, 3]  # the batches of 2 ran eagerly
    assert _metric_rows(tmp_path / "compiled" / "results.csv") == _metric_rows(tmp_path / "eager" / "results.csv")
    ckpt = torch.load(tmp_path / "compiled" / "weights" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])


@pytest.mark.parametrize("stage", ["forward", "backward"])
def test_compile_failure_in_training_warns_and_trains_eagerly(tiny_data, tmp_path, monkeypatch, log_messages, stage):
    """A compiler failure, in a compiled step's forward or its backward, warns once, skips that batch and trains on
    eagerly: the run completes with finite weights."""
    calls = []
    monkeypatch.setattr(torch, "compile", _fake_compile(calls, fail=stage))
    cfg = {**TINY, "batch": 3, "nbs": 3, "warmup_epochs": 0, "val": False}
    YOLO("yolo11n-seg.yaml").train(
        data=str(tiny_data), epochs=2, project=str(tmp_path), name=stage, compile=True, **cfg
    )
    assert [c[1] for c in calls if c[0] == "call"] == [3]  # tried once, then eager
    warned = [m for m in log_messages if "failed in training" in m]
    assert len(warned) == 1 and f"{stage} compiler error" in warned[0]
    ckpt = torch.load(tmp_path / stage / "weights" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert [int(r["epoch"]) for r in _rows(tmp_path / stage / "results.csv")] == [1, 2]
