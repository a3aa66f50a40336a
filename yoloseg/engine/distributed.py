"""Multi-GPU / multi-node training through torch.distributed's own launcher (no temporary scripts).

`device=0,1` in a plain process relaunches the same training as `python -m torch.distributed.run --nproc_per_node 2
-m yoloseg <task> train key=value ...`; under torchrun (RANK set) the Trainer joins the process group itself.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

from ..config.defaults import DEFAULTS
from ..utils.log import log


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def init_process_group(device: torch.device) -> torch.device:
    """Join the group torchrun set up (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
    return device


def cleanup() -> None:
    """Tear the process group down on every rank together: the others wait for rank 0's final validation first (a
    rank that tore down alone while rank 0 still held its connections was once seen to abort, 'terminate called
    without an active exception', on a 2-process gloo run)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_arguments(args: dict[str, Any]) -> list[str]:
    """key=value arguments for the values that differ from the defaults (what the child processes need)."""
    out = []
    for k, v in args.items():
        if k in ("mode", "task") or v == DEFAULTS.get(k, object()) or v is None:
            continue
        out.append(f"{k}={v}".replace(" ", "") if isinstance(v, (list, tuple)) else f"{k}={v}")
    return out


def launch(args: dict[str, Any], nproc: int) -> int:
    """Run this training in `nproc` processes via torch.distributed.run; returns the exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_free_port()),
        "-m",
        "yoloseg",
        args.get("task") or "segment",
        "train",
        *cli_arguments(args),
    ]
    log.info("DDP: " + " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
