"""HTTP(S) downloads with a progress bar, retries and atomic writes (urllib only).

This is the only place in yoloseg that opens a network connection.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .files import atomic_path
from .log import log

__all__ = ["DownloadError", "download_file", "is_url"]

_CHUNK = 1 << 16
_RETRY_DELAY_S = 1.0  # seconds before retry k is k * this
_PERMANENT_HTTP = {400, 401, 403, 404, 410}  # no point retrying these


class DownloadError(ConnectionError):
    """A download failed; the message names the URL and where to put the file by hand."""


def is_url(s: object) -> bool:
    """True for an http:// or https:// URL with a host."""
    if not isinstance(s, str):
        return False
    parts = urllib.parse.urlparse(s)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _fetch(url: str, dest: Path, progress: bool, timeout: float) -> None:
    """One attempt: stream `url` into a temp file beside `dest`, check the size, rename over `dest`."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "yoloseg"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        expected = int(response.headers.get("Content-Length") or 0) or None
        bar = tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress)
        with bar, atomic_path(dest) as tmp, open(tmp, "wb") as f:
            received = 0
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            if expected is not None and received != expected:
                raise DownloadError(f"incomplete download: received {received} of {expected} bytes")


def _is_permanent(error: Exception) -> bool:
    return isinstance(error, urllib.error.HTTPError) and error.code in _PERMANENT_HTTP


def download_file(url: str, dest: str | Path, progress: bool = True, timeout: float = 30, retries: int = 2) -> Path:
    """Download `url` to `dest` atomically (a temp file beside `dest`, renamed when complete); returns `dest`.

    Args:
        url: http(s) URL.
        dest: file to write; its folder is created. An existing file is replaced only by a complete download.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the connection and for each read.
        retries: further attempts after the first one fails (not for 4xx errors such as 404).

    Raises:
        ValueError: `url` is not an http(s) URL.
        DownloadError (a ConnectionError): every attempt failed; the message names the URL and where to put
            the file manually.
    """
    if not is_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    dest = Path(dest)
    error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            log.warning(f"WARNING: download of {url} failed ({error}); retry {attempt}/{retries}")
            time.sleep(attempt * _RETRY_DELAY_S)
        else:
            log.info(f"Downloading {url} to {dest}")
        try:
            _fetch(url, dest, progress, timeout)
            return dest
        # URLError, HTTPError, timeouts and DownloadError are OSErrors; IncompleteRead is an HTTPException
        except (OSError, http.client.HTTPException) as e:
            error = e
            if _is_permanent(e):
                break
    raise DownloadError(
        f"Download of {url} failed ({error}). Check the URL and your connection, or download the file yourself "
        f"and put it at {dest.resolve()}"
    ) from error
