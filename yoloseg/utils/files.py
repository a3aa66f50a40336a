"""File helpers: atomic writes and run-directory numbering."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error remove it.

    A crash never leaves a half-written file at `path`: readers see the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the result the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy the file `src` to `dst` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (utf-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """Return `path`, or `path2`, `path3`, ... the first that does not exist (runs/segment/train -> train2)."""
    path = Path(path)
    if path.exists() and not exist_ok:
        for n in range(2, 100_000):
            candidate = path.with_name(f"{path.name}{n}")
            if not candidate.exists():
                path = candidate
                break
    if mkdir:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (PermissionError, NotADirectoryError, FileExistsError) as e:
            raise PermissionError(
                f"cannot create the output folder {path} ({e.strerror or e}); "
                "pass project=<a writable folder> or make that folder writable"
            ) from e
    return path
