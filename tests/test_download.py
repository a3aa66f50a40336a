"""Downloads and weight resolution against a local HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from yoloseg.utils import download
from yoloseg.utils.download import DownloadError, download_file, is_url
from yoloseg.utils.weights import OFFICIAL_WEIGHTS, resolve_weights

PAYLOAD = os.urandom(300_000)


@dataclass
class Server:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from `directory`, plus /short which promises more bytes than it sends."""

    def __init__(self, *args: object, server_state: Server, **kwargs: object) -> None:
        self.state = server_state
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.state.requests.append(self.path)
        if self.path == "/flaky/file.bin" and self.state.requests.count(self.path) == 1:
            self.send_error(503, "busy")  # the first request fails, the next ones are served
            return
        self.path = self.path.removeprefix("/flaky")
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "file.bin").write_bytes(PAYLOAD)
    (root / "yolo11n-seg.pt").write_bytes(b"fake weights")
    (root / "custom.pt").write_bytes(b"custom weights")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), None)
    state = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}", root=root)
    httpd.RequestHandlerClass = functools.partial(_Handler, server_state=state, directory=str(root))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated settings: weights dir in tmp, cwd an empty folder, no retry delay. Returns the weights dir."""
    weights = tmp_path / "weights"
    monkeypatch.setenv("YOLOSEG_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("YOLOSEG_WEIGHTS_DIR", str(weights))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0)
    return weights


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_with_progress(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "deep" / "file.bin"
    assert download_file(f"{server.url}/file.bin", dest, progress=True) == dest
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]  # no temp file left beside it


def test_404_is_a_clear_error_and_not_retried(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "missing.bin"
    with pytest.raises(ConnectionError, match="404") as info:
        download_file(f"{server.url}/missing.bin", dest, progress=False)
    assert f"{server.url}/missing.bin" in str(info.value) and str(dest) in str(info.value)
    assert not dest.exists() and server.requests == ["/missing.bin"]


def test_short_body_fails_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "short.bin"
    with pytest.raises(DownloadError):
        download_file(f"{server.url}/short", dest, progress=False, retries=0)
    assert list(tmp_path.iterdir()) == [server.root]


def test_a_failed_attempt_is_retried_and_said(server: Server, settings: Path, log_messages: list[str]) -> None:
    dest = settings / "file.bin"
    assert download_file(f"{server.url}/flaky/file.bin", dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and server.requests == ["/flaky/file.bin"] * 2
    assert [m for m in log_messages if "retry" in m] == [
        f"WARNING: download of {server.url}/flaky/file.bin failed (HTTP Error 503: busy); retry 1/2"
    ]


def test_is_url() -> None:
    assert is_url("https://example.com/a.pt") and is_url("http://127.0.0.1:8000/x")
    assert not any(is_url(s) for s in ("yolo11n-seg.pt", "/tmp/a.pt", "ftp://host/a", "http://", Path("a")))
    with pytest.raises(ValueError):
        download_file("file:///etc/passwd", Path("x"))


def test_official_weights_names() -> None:
    assert {"yolo11n-seg.pt", "yolo11x.pt", "yolov8m-seg.pt"} <= OFFICIAL_WEIGHTS and len(OFFICIAL_WEIGHTS) == 20


def test_resolve_official_name_downloads_once(server: Server, settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOSEG_WEIGHTS_URL", server.url)
    first = resolve_weights("yolo11n-seg")  # stem: ".pt" is appended
    assert first == settings / "yolo11n-seg.pt" and first.read_bytes() == b"fake weights"
    assert resolve_weights("yolo11n-seg.pt") == first
    assert server.requests == ["/yolo11n-seg.pt"]  # the second call reused the file


def test_resolve_prefers_existing_files(server: Server, settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOSEG_WEIGHTS_URL", server.url)
    Path("yolo11n-seg.pt").write_bytes(b"local")
    assert resolve_weights("yolo11n-seg.pt") == Path("yolo11n-seg.pt")
    mine = settings.parent / "mine.pt"
    mine.write_bytes(b"x")
    assert resolve_weights(str(mine)) == mine
    assert server.requests == []


def test_resolve_url_downloads_into_weights_dir_once(server: Server, settings: Path) -> None:
    path = resolve_weights(f"{server.url}/custom.pt")
    assert path == settings / "custom.pt" and path.read_bytes() == b"custom weights"
    assert resolve_weights(f"{server.url}/custom.pt") == path and server.requests == ["/custom.pt"]


def test_resolve_unknown_name_lists_where_it_looked(settings: Path) -> None:
    with pytest.raises(FileNotFoundError, match="yolo11n-sag.pt") as info:
        resolve_weights("yolo11n-sag")
    assert str(settings.resolve()) in str(info.value) and "yolo11n-seg.pt" in str(info.value)  # did-you-mean


def test_offline_error_says_where_to_put_the_file(settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("YOLOSEG_WEIGHTS_URL", url)
    with pytest.raises(ConnectionError) as info:
        resolve_weights("yolo11s-seg.pt")
    message = str(info.value)
    assert str(settings.resolve()) in message and f"{url}/yolo11s-seg.pt" in message
    assert not (settings / "yolo11s-seg.pt").exists()
