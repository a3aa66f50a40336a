"""Device selection, seeding and small torch helpers."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..config.defaults import ConfigError
from .log import log


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """'cpu', '0', '0,1', 'cuda:1', 'cuda' (as PyTorch spells CUDA 0), 0, None (CUDA 0 when available, else CPU) -> the
    device for this process.

    A list of GPUs selects the first one here; the trainer launches one process per GPU for the others.
    """
    if isinstance(device, torch.device):
        return device
    text = "" if device is None else str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    if text in ("", "none"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        return torch.device("mps")
    if text == "cuda":
        text = "0"
    ids = [s for s in text.split(",") if s != ""]
    if not all(s.isdigit() or s == "-1" for s in ids):
        raise ConfigError(f"device={device!r} is not a device; use cpu, 0, 0,1 or cuda:0", key="device", value=device)
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} asks for CUDA but torch.cuda.is_available() is False; use device=cpu",
            key="device",
            value=device,
        )
    first = int(ids[0]) if ids[0] != "-1" else 0
    if first >= torch.cuda.device_count():
        raise ConfigError(
            f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible", key="device", value=device
        )
    return torch.device(f"cuda:{first}")


def cuda_device_ids(device: str | int | None) -> list[int]:
    """The CUDA device ids a `device` argument names ('0,1' -> [0, 1]); [] for cpu / None / a single device."""
    if device is None:
        return []
    text = str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    ids = [s for s in text.split(",") if s.isdigit()]
    return [int(s) for s in ids] if len(ids) > 1 else []


def check_imgsz(imgsz: int | list[int] | tuple[int, ...] | str, stride: int = 32) -> tuple[int, int]:
    """640 -> (640, 640); [h, w] -> (h, w); each side rounded up to a multiple of `stride` (with a warning)."""
    if isinstance(imgsz, str):
        imgsz = [int(s) for s in imgsz.replace("[", "").replace("]", "").replace("(", "").replace(")", "").split(",")]
    if isinstance(imgsz, (int, float)):
        imgsz = [int(imgsz)] * 2
    sizes = [int(s) for s in imgsz]
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) <= 0:
        raise ValueError(f"imgsz={imgsz!r}: give one positive size (640) or [height, width]")
    rounded = tuple(-(-s // stride) * stride for s in sizes)
    if list(rounded) != sizes:
        log.warning(f"WARNING: imgsz={sizes} is not a multiple of the max stride {stride}; using {list(rounded)}")
    return rounded  # type: ignore[return-value]


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets) where the OS has one, else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def restricted_cpus() -> int | None:
    """usable_cpus() when the process is pinned to fewer CPUs than the machine has, else None. ONNX Runtime and
    OpenVINO size their thread pools by the machine's cores and would oversubscribe the pinned ones."""
    n = usable_cpus()
    return n if n < (os.cpu_count() or n) else None


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader workers to use. On the CPU they only help with the cores torch's compute threads leave free
    (measured on 2 cores, coco128-seg at 320: 32 s/epoch with 0 workers, 39 s with 2; the shapes recipe at 256:
    25.6 against 27.0 s, and 18.5 against 22.2 s on 2 pinned CPUs of an AMX Xeon; coco128 val at 640: 12.7 s against
    13.4 with 8 workers; medians), counted among the CPUs this process may use (a taskset or cpuset pins it to fewer
    than os.cpu_count()); on GPUs as requested."""
    if device.type != "cpu":
        return requested
    return min(requested, max(usable_cpus() - torch.get_num_threads(), 0))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic algorithms (warn-only)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also NaN-fills every new tensor (to expose reads of memory never written): ~17% of a
        # CPU training step for nothing, as no op here reads memory it did not write
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if torch.cuda.is_available():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def end_deterministic() -> None:
    """Undo seed_everything(deterministic=True): torch's defaults again (nondeterministic algorithms allowed, new
    tensors NaN-filled only when deterministic mode is on)."""
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True


def time_sync() -> float:
    """perf_counter after waiting for queued CUDA work."""
    import time

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()
