"""Shared fixtures: the path of ../shared and an isolated settings/datasets folder for every test."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

# ../shared beside the repo; YOLOSEG_SHARED_DIR points elsewhere (e.g. a copy on a GPU machine)
SHARED = Path(os.environ.get("YOLOSEG_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")


REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """`python -c code args...` in a fresh process from the repo root (checks that need a process of their own):
    the CompletedProcess, output captured as text."""
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared reference material is expected at ../shared)")
    return path


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Never read or write the real user config / datasets / weights folders from tests."""
    root = tmp_path_factory.mktemp("yoloseg_home")
    monkeypatch.setenv("YOLOSEG_CONFIG_DIR", str(root / "config"))
    monkeypatch.setenv("YOLOSEG_DATASETS_DIR", str(root / "datasets"))
    monkeypatch.setenv("YOLOSEG_WEIGHTS_DIR", str(root / "weights"))
    monkeypatch.setenv("YOLOSEG_RUNS_DIR", str(root / "runs"))
    monkeypatch.setenv("YOLOSEG_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("YOLOSEG_WEIGHTS_URL", "http://127.0.0.1:9/unreachable")
    # the `yolo` command tunes malloc for its whole process (utils.memory); CLI tests run in this one
    monkeypatch.setenv("YOLOSEG_KEEP_FREED_MEMORY", "0")


@pytest.fixture
def log_messages(monkeypatch):
    """Messages logged by yoloseg during the test (the package logger does not propagate to caplog)."""
    from yoloseg.utils.log import LOGGER

    seen: list[str] = []

    class _ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    monkeypatch.setattr(LOGGER, "handlers", [_ListHandler()])
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    yield seen
    LOGGER.setLevel(level)


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", help="also run the tests marked slow (e.g. a real torch.compile)"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="marked slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
