"""Dataset YAML resolution and checks, bundled names, zips, downloads from a local server, generation."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from yoloseg.data.dataset_yaml import DatasetError, bundled_dir, check_dataset
from yoloseg.data.images import list_images

from .conftest import shared_path


def shared(name: str) -> Path:
    return shared_path("data", name)


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOSEG_DATASETS_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("YOLOSEG_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("YOLOSEG_CACHE_DIR", str(tmp_path / "user-cache"))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _mini(root: Path) -> Path:
    """A 2+1 image dataset with the usual layout."""
    shutil.copytree(shared("coco8-seg") / "images", root / "images")
    shutil.copytree(shared("coco8-seg") / "labels", root / "labels")
    return root


def test_shared_coco8_and_coco128_counts():
    d = check_dataset(shared("coco8-seg") / "data.yaml")
    assert d["nc"] == 80 and d["names"][0] == "person" and d["path"] == shared("coco8-seg")
    assert len(list_images(d["train"])) == 4 and len(list_images(d["val"])) == 4 and d["test"] is None
    d = check_dataset(shared("coco128-seg") / "data_all128.yaml")  # YAML lists as splits
    assert len(d["train"]) == 2 and len(list_images(d["train"])) == 128
    d = check_dataset(shared("coco128-seg"))  # a folder holding data.yaml
    assert len(list_images(d["train"])) == 103 and len(list_images(d["val"])) == 25


def test_bundled_names_resolve_under_datasets_dir(tmp_path):
    assert {"coco8-seg.yaml", "coco128-seg.yaml", "coco-seg.yaml", "shapes-seg.yaml"} <= {
        p.name for p in bundled_dir().glob("*.yaml")
    }
    _mini(tmp_path / "datasets" / "coco8-seg")
    for name in ("coco8-seg", "coco8-seg.yaml"):
        d = check_dataset(name, autodownload=False)
        assert d["path"] == tmp_path / "datasets" / "coco8-seg" and d["nc"] == 80
        assert "coco8-seg.zip" in d["download"]


def test_bundled_missing_without_download_names_key(tmp_path):
    with pytest.raises(DatasetError, match=r"coco128-seg\.yaml: key 'train'.*does not exist"):
        check_dataset("coco128-seg", autodownload=False)
    with pytest.raises(DatasetError, match="not a bundled dataset"):
        check_dataset("no-such-dataset")


@pytest.mark.parametrize(
    "body, words",
    [
        ("train: images/train\nnames: [a]\n", "key 'val' is missing"),
        ("val: images/val\nnames: [a]\n", "key 'train' is missing"),
        ("train: images/train\nval: images/val\n", "key 'names' is missing"),
        ("train: images/train\nval: images/val\nnames: [a, b]\nnc: 3\n", "'nc' is 3 but 'names' has 2"),
        ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "without gaps"),
        ("train: images/train\nval: images/nope\nnames: [a]\n", "key 'val'.*does not exist"),
        ("train: images/train\nval: empty\nnames: [a]\n", "key 'val': no images"),
        ("- just\n- a list\n", "cannot be read as YAML"),
        ("train: [1, 2]\nval: images/val\nnames: [a]\n", "key 'train' must be"),
        ("train: images/train\nval: images/val\nnc: 0\n", "'nc' must be a positive integer"),
    ],
)
def test_yaml_errors_name_file_and_key(tmp_path, body, words):
    root = _mini(tmp_path / "ds")
    (root / "empty").mkdir()
    f = _write(root / "bad.yaml", "path: .\n" + body)
    with pytest.raises(DatasetError, match=words) as e:
        check_dataset(f)
    assert str(f) in str(e.value)


def test_names_forms_and_relative_path(tmp_path):
    root = _mini(tmp_path / "ds")
    f = _write(root / "cfg" / "a.yaml", "path: ..\ntrain: images/train\nval: images/val\nnc: 2\n")
    d = check_dataset(f)
    assert d["names"] == {0: "class_0", 1: "class_1"} and d["path"] == root
    # `validation` is accepted; no `path` means the YAML's folder; a .txt split
    _write(root / "val.txt", "./images/val/000000000036.jpg\nimages/val/000000000042.jpg\n")
    f = _write(root / "b.yaml", "train: images/train\nvalidation: val.txt\nnames: [x, y]\n")
    d = check_dataset(f)
    assert d["names"] == {0: "x", 1: "y"} and len(list_images(d["val"])) == 2
    # a relative path that is not beside the YAML resolves under the datasets folder
    _mini(tmp_path / "datasets" / "elsewhere")
    f = _write(tmp_path / "c.yaml", "path: elsewhere\ntrain: images/train\nval: images/val\nnames: [x]\n")
    assert check_dataset(f)["path"] == tmp_path / "datasets" / "elsewhere"
    with pytest.raises(DatasetError, match="expected a mapping"):
        check_dataset(_write(tmp_path / "d.yaml", "- a\n- b\n"))


def test_local_zip(tmp_path):
    root = _mini(tmp_path / "src" / "mini")
    _write(root / "data.yaml", "path: .\ntrain: images/train\nval: images/val\nnc: 80\n")
    archive = _zip(root, tmp_path / "mini.zip")
    d = check_dataset(archive)
    assert d["path"] == tmp_path / "datasets" / "mini" and len(list_images(d["val"])) == 4
    assert check_dataset(archive)["path"] == d["path"]  # second time: already unpacked


def _zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, Path(folder.name) / p.relative_to(folder))
    return out


@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 from a thread; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_zip_from_local_server(tmp_path, http_dir):
    pytest.importorskip("yoloseg.utils.download")
    www, base = http_dir
    src = tmp_path / "build" / "coco8-seg"
    shutil.copytree(shared("coco8-seg"), src)
    _zip(src, www / "coco8-seg.zip")
    f = _write(
        tmp_path / "cfg" / "coco8-local.yaml",
        f"path: coco8-seg\ntrain: images/train\nval: images/val\nnc: 80\ndownload: {base}/coco8-seg.zip\n",
    )
    with pytest.raises(DatasetError, match="key 'train'"):
        check_dataset(f, autodownload=False)
    d = check_dataset(f)
    assert d["path"] == tmp_path / "datasets" / "coco8-seg"
    assert len(list_images(d["train"])) == 4 and len(list_images(d["val"])) == 4
    assert not (tmp_path / "datasets" / "coco8-seg.zip").exists()  # archive removed after unpacking
    assert not [p for p in (tmp_path / "datasets").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "download", ["bash get.sh", "python -c 'import os'", "https://example.com/setup.py", "ftp://x/y.zip"]
)
def test_download_only_archive_urls(tmp_path, download):
    f = _write(
        tmp_path / "x.yaml", f"path: nothing-here\ntrain: images/train\nval: images/val\nnc: 1\ndownload: {download}\n"
    )
    with pytest.raises(DatasetError, match="key 'download' must be the http"):
        check_dataset(f)


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    download = pytest.importorskip("yoloseg.utils.download")
    monkeypatch.setattr(download, "_RETRY_DELAY_S", 0.0, raising=False)
    f = _write(
        tmp_path / "x.yaml",
        "path: gone\ntrain: images/train\nval: images/val\nnc: 1\ndownload: http://127.0.0.1:9/gone.zip\n",
    )
    with pytest.raises(ConnectionError, match="127.0.0.1:9/gone.zip"):
        check_dataset(f)


def test_generate_shapes_from_bundled_tiny(tmp_path):
    d = check_dataset("shapes-tiny-seg.yaml")
    assert d["path"] == tmp_path / "datasets" / "shapes-tiny-seg" and d["nc"] == 5
    assert len(list_images(d["train"])) == 16 and len(list_images(d["val"])) == 8
    assert not [p for p in (tmp_path / "datasets").iterdir() if p.name.startswith(".")]
    stamp = os.stat(d["path"] / "data.yaml").st_mtime_ns
    check_dataset("shapes-tiny-seg")  # not generated again
    assert os.stat(d["path"] / "data.yaml").st_mtime_ns == stamp
