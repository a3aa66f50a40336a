"""Fetch and unpack dataset archives (zip / tar only). Nothing from an archive is ever executed."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from ..utils.log import log
from .errors import DatasetError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _safe_members(names: list[str], archive: Path) -> None:
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise DatasetError(f"{archive}: unsafe member path '{n}' (absolute or '..'); refusing to extract it")


def extract_archive(archive: Path, dest: Path, loose_dest: Path | None = None) -> list[Path]:
    """Unpack `archive` into folder `dest` (merged with what is there; existing files are kept).

    An archive holding one top folder lands as `dest/<top>`; one with loose members at its top puts them into
    `loose_dest` (default `dest`). It is unpacked into a temporary folder first, then moved in, so an interrupted
    extraction leaves nothing half-written. Returns the top-level entries written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=dest) as tmp:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                if bad is not None:
                    raise DatasetError(f"{archive}: member '{bad}' is corrupt (CRC error); delete the file and retry")
                _safe_members(z.namelist(), archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = [m for m in t.getmembers() if m.isfile() or m.isdir()]  # no links or devices
                _safe_members([m.name for m in members], archive)
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                t.extractall(tmp, members=members, **safe)
        else:
            raise DatasetError(f"{archive}: not a zip or tar archive; delete it and download it again")
        tops = [p for p in Path(tmp).iterdir() if p.name not in ("__MACOSX",)]
        if not (len(tops) == 1 and tops[0].is_dir()):
            dest = Path(loose_dest or dest)
            dest.mkdir(parents=True, exist_ok=True)
        for p in tops:
            _merge(p, dest / p.name)
    return [dest / p.name for p in tops]


def _merge(src: Path, dst: Path) -> None:
    if not dst.exists():
        shutil.move(str(src), str(dst))
    elif src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)


def download_and_extract(
    url: str, dest: Path, loose_dest: Path | None = None, yaml_file: Path | str = "", progress: bool = True
) -> list[Path]:
    """Fetch an archive URL into `dest`, check it, unpack it there (see extract_archive) and delete the archive."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not is_archive_name(parsed.path):
        raise DatasetError(
            f"{yaml_file}: key 'download' must be the http(s) URL of a zip or tar archive, got {url!r}; "
            "scripts and commands are never run (fetch the data yourself and set 'path')"
        )
    from ..utils.download import download_file  # imported here: only needed when something is fetched

    archive = Path(dest) / Path(parsed.path).name
    log.info(f"Downloading {url} to {archive} ...")
    download_file(url, archive, progress=progress)
    try:
        tops = extract_archive(archive, Path(dest), loose_dest)
    finally:
        archive.unlink(missing_ok=True)
    log.info(f"Unpacked {archive.name} into {dest}")
    return tops
