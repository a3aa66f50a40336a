"""Find model weights by path, official name or URL, downloading official assets on first use."""

from __future__ import annotations

import difflib
import urllib.parse
from pathlib import Path

from .download import download_file, is_url
from .settings import get_setting

__all__ = ["OFFICIAL_WEIGHTS", "resolve_weights", "weights_dir"]

OFFICIAL_WEIGHTS = frozenset(
    f"{family}{scale}{task}.pt" for family in ("yolo11", "yolov8") for scale in "nsmlx" for task in ("", "-seg")
)


def weights_dir() -> Path:
    """The folder downloaded weights go to (setting `weights_dir`, env YOLOSEG_WEIGHTS_DIR)."""
    return Path(str(get_setting("weights_dir"))).expanduser()


def _download(url: str, dest: Path) -> Path:
    """download_file with an error message that says where the file can be put by hand."""
    try:
        return download_file(url, dest)
    except ConnectionError as e:
        raise ConnectionError(
            f"Could not download {dest.name} from {url}: {e.__cause__ or e}. If you are offline, download it "
            f"elsewhere and put it in the weights folder {dest.parent.resolve()} (setting 'weights_dir', env "
            "YOLOSEG_WEIGHTS_DIR) or the current directory; YOLOSEG_WEIGHTS_URL sets where official weights come from."
        ) from e


def _from_url(url: str) -> Path:
    """A URL: the file in weights_dir named after the URL's last path component, downloaded if missing."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise ValueError(f"cannot tell a file name from the URL {url!r}")
    dest = weights_dir() / name
    return dest if dest.is_file() else _download(url, dest)


def _not_found(name: str, looked: list[Path]) -> FileNotFoundError:
    close = difflib.get_close_matches(Path(name).name, sorted(OFFICIAL_WEIGHTS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    where = ", ".join(str(p.resolve()) for p in looked)
    return FileNotFoundError(
        f"Weights '{name}' not found; looked at {where}. Official names are yolo11{{n,s,m,l,x}}[-seg].pt and "
        f"yolov8{{n,s,m,l,x}}[-seg].pt.{hint}"
    )


def resolve_weights(name_or_path: str | Path) -> Path:
    """Path of the weights file for `name_or_path`, downloading official weights or URLs on first use.

    - an existing file is returned as is;
    - a bare stem gets ".pt" appended ("yolo11n-seg" -> "yolo11n-seg.pt");
    - the name is looked for as given (relative to the cwd), then in the weights folder;
    - an official name (see OFFICIAL_WEIGHTS) found in neither is downloaded from the `weights_url` setting
      (env YOLOSEG_WEIGHTS_URL) into the weights folder; an http(s) URL is downloaded there too (once).

    Raises:
        FileNotFoundError: not found and not an official name; the message lists where it looked.
        ConnectionError: a needed download failed; the message names the URL and the weights folder.
    """
    text = str(name_or_path)
    if is_url(text):
        return _from_url(text)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if not path.suffix:
        path = path.with_name(path.name + ".pt")
    folder = weights_dir()
    looked = [path, folder / path.name]
    for candidate in looked:
        if candidate.is_file():
            return candidate
    if path.name in OFFICIAL_WEIGHTS:
        base = str(get_setting("weights_url")).rstrip("/")
        return _download(f"{base}/{path.name}", folder / path.name)
    raise _not_found(text, looked)
