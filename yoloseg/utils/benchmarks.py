"""Benchmark a model across export formats: export, validate (mask mAP50-95), time inference, print a table.

`benchmark(model="yolo11n-seg.pt", data="coco8-seg.yaml", imgsz=640)` -> list of rows
{"format", "status", "size_mb", "metrics/mAP50-95(M)" (or "(B)" for detect), "inference_ms"}; the table is printed
and written to `<save_dir>/benchmarks.log` (the rows also to `benchmarks.json`).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write_text
from .log import log

BENCHMARK_FORMATS = ("pytorch", "torchscript", "onnx", "openvino")


def time_inference(runner: Any, imgsz: tuple[int, int], device: torch.device, runs: int = 10, warmup: int = 2) -> float:
    """Median ms per image of `runner(x)` for one (1, 3, H, W) input (a fused model, its CompiledForward, a backend)."""
    x = torch.rand(1, 3, *imgsz, device=device)
    module = runner if isinstance(runner, torch.nn.Module) else getattr(runner, "model", None)  # CompiledForward
    if isinstance(module, torch.nn.Module):
        p = next(module.parameters())
        x = x.to(p.device, p.dtype)
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            runner(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _map(metrics: Any, key: str) -> float | None:
    """mAP50-95 from a metrics object: its results_dict key, else .seg.map / .box.map."""
    results = getattr(metrics, "results_dict", None)
    if isinstance(results, dict) and key in results:
        return float(results[key])
    part = getattr(metrics, "seg" if key.endswith("(M)") else "box", None)
    value = getattr(part, "map", None)
    return None if value is None else float(value)


def format_table(rows: list[dict[str, Any]], key: str) -> str:
    """A fixed-width text table of the rows."""
    header = f"{'format':<12} {'status':<40} {'size (MB)':>10} {key:>22} {'inference (ms/im)':>18}"
    lines = [header, "-" * len(header)]
    for r in rows:
        size = "" if r["size_mb"] is None else f"{r['size_mb']:.1f}"
        metric = "" if r[key] is None else f"{r[key]:.4f}"
        speed = "" if r["inference_ms"] is None else f"{r['inference_ms']:.2f}"
        lines.append(f"{r['format']:<12} {r['status'][:40]:<40} {size:>10} {metric:>22} {speed:>18}")
    return "\n".join(lines)


def benchmark(
    model: Any = "yolo11n-seg.pt",
    data: str = "coco8-seg.yaml",
    imgsz: int = 640,
    half: bool = False,
    int8: bool = False,
    device: str | None = "cpu",
    verbose: bool | float = False,
    formats: list[str] | tuple[str, ...] | None = None,
    save_dir: str | Path = ".",
) -> list[dict[str, Any]]:
    """Export `model` to each format, validate it on `data` and time its inference.

    Args:
        model: a weights path / model name or a `YOLO` object (PyTorch).
        formats: subset of ('pytorch', 'torchscript', 'onnx', 'openvino'); None benchmarks all of them.
        verbose: True raises on the first failing format; a float also requires mAP50-95 >= that value.
        save_dir: where the exports, benchmarks.log and benchmarks.json are written.
    Returns:
        one dict per format: format, status ('ok', 'missing <package>' or 'failed: <error>'), size_mb,
        metrics/mAP50-95(M) (or (B) for detect), inference_ms.
    """
    from ..engine.inference import CompiledForward, inference_copy, inference_precision
    from ..export import FORMATS, check_requirements, export_model, resolve_format
    from ..export.backends import load_backend
    from ..export.common import export_device, file_size_mb
    from ..model import YOLO
    from .torch_utils import check_imgsz

    yolo = model if isinstance(model, YOLO) else YOLO(str(model))
    if yolo.model is None:
        raise ValueError("benchmark needs a PyTorch model (*.pt or *.yaml) to export from")
    task = yolo.task
    key = "metrics/mAP50-95(M)" if task == "segment" else "metrics/mAP50-95(B)"
    names = list(formats) if formats else list(BENCHMARK_FORMATS)
    size = check_imgsz(imgsz, 32)
    dev = export_device(device)
    save_dir = Path(save_dir)
    stem = Path(yolo.ckpt_path or yolo.model_name or "model").stem
    rows: list[dict[str, Any]] = []
    for name in names:
        row: dict[str, Any] = {"format": name, "status": "ok", "size_mb": None, key: None, "inference_ms": None}
        try:
            if name == "pytorch":
                fmt, file = "pytorch", Path(yolo.ckpt_path) if yolo.ckpt_path else None
                precision = inference_precision(half, dev)
                dtype = torch.float16 if precision == "fp16" else torch.float32
                # what the predictor runs: the fused copy (channels-last on the CPU), bf16 autocast for half on AMX
                model = inference_copy(yolo.model, dev, dtype)
                runner, exported = CompiledForward(model, bf16=precision == "bf16"), yolo
            else:
                fmt = resolve_format(name)
                missing = [p for p in FORMATS[fmt].packages if importlib.util.find_spec(p) is None]
                if missing and verbose is False:
                    row["status"] = f"missing {', '.join(missing)} (pip install 'yoloseg[export]')"
                    rows.append(row)
                    continue
                check_requirements(fmt)
                args = {"format": fmt, "imgsz": imgsz, "half": half, "int8": int8, "device": device, "data": data}
                file = export_model(yolo.model, args, save_dir / f"{stem}.pt")  # beside the log, not the weights
                runner = load_backend(file, device=dev)
                runner.set_precision(inference_precision(half, runner.device, warn=False))  # as val below runs it
                exported = YOLO(str(file), task=task)
            row["format"] = fmt
            row["size_mb"] = file_size_mb(file) if file is not None and file.exists() else None
            metrics = exported.val(data=data, imgsz=imgsz, batch=1, device=device, half=half, plots=False)
            row[key] = _map(metrics, key)
            row["inference_ms"] = time_inference(runner, size, dev)
            if isinstance(verbose, float) and not isinstance(verbose, bool) and (row[key] or 0.0) < verbose:
                raise AssertionError(f"{fmt}: {key} {row[key]} is below the floor {verbose}")
        except Exception as e:
            if verbose is not False:
                raise
            row["status"] = f"failed: {type(e).__name__}: {e}"
            log.warning(f"WARNING: benchmark {name}: {row['status']}")
        rows.append(row)
    table = format_table(rows, key)
    log.info(f"\nBenchmarks: {yolo.model_name or 'model'} on {data} at imgsz={imgsz} ({dev})\n{table}")
    atomic_write_text(save_dir / "benchmarks.log", table + "\n")
    atomic_write_text(save_dir / "benchmarks.json", json.dumps(rows, indent=2))
    return rows
