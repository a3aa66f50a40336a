"""utils.memory: the `yolo` command keeps freed memory for reuse (glibc malloc thresholds); the library never does so
on its own. The thresholds are settings of a whole process, so each check runs in a child process."""

from __future__ import annotations

import os
import platform

import pytest

from yoloseg import cli
from yoloseg.utils import memory

from .conftest import run_python

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc thresholds are glibc's"
)
CYCLES = """
import ctypes, resource, sys, torch
from yoloseg.utils.memory import M_TRIM_THRESHOLD, keep_freed_memory, malloc_status
mode = sys.argv[1]
applied = keep_freed_memory() if mode == "keep" else False
if mode == "release":  # the control: glibc told to hand every freed byte back at once
    ctypes.CDLL(None).mallopt(M_TRIM_THRESHOLD, 0)
def cycle():  # six 20 MB blocks, written, then all freed: more than any trim threshold glibc sets itself (64 MB)
    blocks = [torch.ones(20 << 20, dtype=torch.uint8) for _ in range(6)]
    del blocks
for _ in range(3):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10, malloc_status(), sep="|")
"""


def _cycles(mode: str, **env: str) -> tuple[bool, float, str]:
    environ = {k: v for k, v in os.environ.items() if k != memory.OPT_OUT} | env
    run = run_python(CYCLES, mode, env=environ)
    assert run.returncode == 0, run.stderr[-2000:]
    applied, faults, status = run.stdout.strip().split("|")
    return applied == "True", float(faults), status


@glibc
def test_keeping_freed_memory_stops_the_page_faults_of_blocks_allocated_again():
    """Memory handed back to the kernel is faulted in again, 5,120 pages per 20 MB block, on every cycle (glibc's own
    defaults do so now and then, depending on the process's layout; the control always); with the thresholds set
    the freed blocks are reused."""
    applied, released_faults, _ = _cycles("release")
    assert not applied and released_faults > 6 * 4000
    applied, _, status = _cycles("default")
    assert not applied and status == "C library defaults"
    applied, kept_faults, status = _cycles("keep")
    assert applied and kept_faults < 100 and status.startswith("keeps freed memory")


@glibc
def test_thresholds_set_in_the_environment_win():
    applied, _, status = _cycles("keep", MALLOC_TRIM_THRESHOLD_="1000000")
    assert not applied and status == "thresholds from the environment (MALLOC_TRIM_THRESHOLD_)"
    applied, _, status = _cycles("keep", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536")
    assert not applied and "glibc.malloc.mmap_threshold" in status


def test_importing_and_the_python_api_leave_malloc_alone():
    """Only an explicit call (or the `yolo` command) changes the thresholds: importing yoloseg and predicting do not."""
    code = (
        "import numpy as np, torch; from yoloseg import YOLO; from yoloseg.utils import memory; "
        "YOLO('yolo11n-seg.yaml').predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, verbose=False); "
        "print(memory._applied)"
    )
    run = run_python(code)
    assert run.returncode == 0 and run.stdout.strip().endswith("False"), run.stderr[-2000:]


def test_yolo_command_keeps_freed_memory_unless_opted_out(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)

    class Model:
        def __init__(self, name, task=None):
            pass

        def val(self, **kwargs):
            return None

    monkeypatch.setattr(cli, "_load_model_class", lambda: Model)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(memory.OPT_OUT, raising=False)
    assert cli.main(["segment", "val", "model=yolo11n-seg.pt"]) == 0
    assert calls == [1]
    monkeypatch.setenv(memory.OPT_OUT, "0")
    assert cli.main(["segment", "val", "model=yolo11n-seg.pt"]) == 0
    assert calls == [1]
