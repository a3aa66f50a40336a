"""The package logger. Configured lazily on first use; never touches the root logger."""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("yoloseg")


def _configure() -> None:
    if LOGGER.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
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
