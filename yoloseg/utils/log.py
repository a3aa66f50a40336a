"""The package logger. Configured lazily on first use; never touches the root logger."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("yoloseg")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of each message (so redirection and capture work)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure() -> None:
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(logging.INFO)
    if LOGGER.handlers:
        return
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


class _LazyLogger:
    """Proxy that installs the stdout handler the first time a message is logged."""

    def __getattr__(self, name: str):
        _configure()
        return getattr(LOGGER, name)


log = _LazyLogger()
