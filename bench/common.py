"""What the benchmark scripts share: where the shared material is, and the process settings they take."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def add_keep_freed_memory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="as the yolo command does: glibc keeps freed memory for reuse (yoloseg.utils.memory)",
    )


def setup_process(keep_freed_memory: bool, threads: int = 0) -> None:
    """Before the benchmark's work: glibc keeps freed memory when asked (as the yolo command does), torch runs
    `threads` threads when given, and yoloseg's label caches go to a temporary folder, never beside the shared
    datasets."""
    if keep_freed_memory:
        from yoloseg.utils.memory import keep_freed_memory as keep

        keep()
    os.environ.setdefault("YOLOSEG_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    if threads:
        import torch

        torch.set_num_threads(threads)


def emit(report: dict, out: Path | None) -> None:
    """Print the benchmark's JSON report, and write it to `out` too (atomically) when given."""
    import json

    text = json.dumps(report, indent=2)
    print(text)
    if out:
        from yoloseg.utils.files import atomic_write_text

        atomic_write_text(out, text + "\n")
