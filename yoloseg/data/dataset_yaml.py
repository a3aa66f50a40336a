"""Find, read and check a dataset YAML; fetch (archive URLs only) or generate the data it names.

Keys: `path` (root), `train`, `val` (`validation` accepted), optional `test`; `names` (list or {id: name}) and/or
`nc`; optional `download` (an archive URL, or a list of URLs / {url, into} entries) and `generate` (built-in
synthetic data, e.g. `{kind: shapes, n_train: 300, n_val: 60, imgsz: 256, seed: 0}`). A YAML is only parsed
(yaml.safe_load); nothing in it is executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..utils.log import log
from .archives import archive_stem, download_and_extract, extract_archive, is_archive_name
from .errors import DatasetError
from .images import IMG_FORMATS, list_images

__all__ = ["DatasetError", "bundled_dir", "check_dataset", "datasets_dir", "find_yaml", "load_yaml"]

SPLITS = ("train", "val", "test")


def bundled_dir() -> Path:
    """The folder of the dataset YAMLs shipped with the package."""
    return Path(__file__).resolve().parents[1] / "config" / "datasets"


def datasets_dir() -> Path:
    from ..utils.settings import get_setting

    return Path(get_setting("datasets_dir")).expanduser().resolve()


def _bundled_names() -> str:
    return ", ".join(sorted(p.name for p in bundled_dir().glob("*.yaml")))


def find_yaml(data: str | Path) -> tuple[Path, bool]:
    """Resolve `data=` (a YAML file, a folder holding one, a zip/tar archive, or a bundled name) to
    (yaml path, is_bundled)."""
    p = Path(str(data)).expanduser()
    if not p.exists() and not p.is_absolute() and len(p.parts) > 1 and (datasets_dir() / p).exists():
        p = datasets_dir() / p  # e.g. 'coco128-seg/data.yaml' remembered by a checkpoint: under the datasets dir
    if p.is_file() and is_archive_name(p.name):
        return _yaml_in_dir(_unpack_local_archive(p), data), False
    if p.is_dir():
        return _yaml_in_dir(p, data), False
    if p.is_file():
        if p.suffix.lower() not in (".yaml", ".yml"):
            raise DatasetError(f"data={data}: expected a dataset .yaml, a folder holding one, or a .zip/.tar archive")
        return p, False
    name = p.name if p.suffix.lower() in (".yaml", ".yml") else f"{p.name}.yaml"
    if len(p.parts) == 1 and (bundled_dir() / name).is_file():
        return bundled_dir() / name, True
    raise DatasetError(
        f"data={data}: no such file or folder, and not a bundled dataset ({_bundled_names()}); "
        "pass the path of a dataset YAML, a folder holding one, or a .zip of it"
    )


def _yaml_in_dir(folder: Path, data: Any) -> Path:
    for depth in ("*", "*/*"):
        found = sorted(q for q in folder.glob(depth) if q.suffix.lower() in (".yaml", ".yml") and q.is_file())
        preferred = [q for q in found if q.stem == "data"]
        if len(found) == 1 or preferred:
            return (preferred or found)[0]
        if found:
            raise DatasetError(f"data={data}: several YAMLs in {folder} ({', '.join(q.name for q in found)}); pass one")
    raise DatasetError(f"data={data}: no dataset YAML in {folder}; add a data.yaml (path, train, val, names)")


def _unpack_local_archive(archive: Path) -> Path:
    """Unpack a local dataset archive into the datasets folder once; returns the folder holding its content."""
    dest = datasets_dir() / archive_stem(archive)
    if dest.is_dir():
        log.info(f"Using {dest} (already unpacked from {archive.name})")
        return dest
    tops = extract_archive(archive, dest.parent, loose_dest=dest)
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else dest


def load_yaml(path: Path) -> dict:
    """Parse a YAML file as a mapping (safe loader only)."""
    try:
        cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(f"{path}: cannot be read as YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise DatasetError(f"{path}: expected a mapping with keys path, train, val, names; got {type(cfg).__name__}")
    return cfg


def parse_names(cfg: dict, yaml_file: Path) -> dict[int, str]:
    """{id: name} from `names` (list or dict with ids 0..n-1) and/or `nc`, checked against each other."""
    names, nc = cfg.get("names"), cfg.get("nc")
    if names is None and nc is None:
        raise DatasetError(f"{yaml_file}: key 'names' is missing; add 'names: [cat, dog]' or '{{0: cat, 1: dog}}'")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise DatasetError(f"{yaml_file}: key 'nc' must be a positive integer, got {nc!r}")
    if names is None:
        return {i: f"class_{i}" for i in range(nc)}
    if isinstance(names, (list, tuple)):
        out = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, dict):
        try:
            out = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(
                f"{yaml_file}: key 'names' must map integer ids to names, got keys {list(names)[:5]}"
            ) from None
        if sorted(out) != list(range(len(out))):
            raise DatasetError(
                f"{yaml_file}: key 'names' ids must be 0..{len(out) - 1} without gaps, got {sorted(out)}"
            )
        out = dict(sorted(out.items()))
    else:
        raise DatasetError(f"{yaml_file}: key 'names' must be a list or a {{id: name}} mapping, got {names!r}")
    if not out:
        raise DatasetError(f"{yaml_file}: key 'names' is empty; list at least one class")
    if nc is not None and nc != len(out):
        raise DatasetError(f"{yaml_file}: key 'nc' is {nc} but 'names' has {len(out)} entries; make them agree")
    return out


def resolve_root(cfg: dict, yaml_file: Path, bundled: bool) -> Path:
    """The dataset root: `path` if absolute; a relative one against the YAML's folder, then the datasets folder."""
    raw = cfg.get("path")
    if raw in (None, ""):
        return datasets_dir() / yaml_file.stem if bundled else yaml_file.parent.resolve()
    p = Path(str(raw)).expanduser()
    if p.is_absolute():
        return p
    beside, under = (yaml_file.parent / p).resolve(), datasets_dir() / p
    if not bundled and beside.exists():
        return beside
    if under.exists() or bundled or cfg.get("download") or cfg.get("generate"):
        return under
    return beside


def _split_entries(cfg: dict, key: str, root: Path, yaml_file: Path) -> list[Path] | None:
    value = cfg.get(key)
    if value in (None, "", []):
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (str, Path)) for v in values):
        raise DatasetError(f"{yaml_file}: key '{key}' must be a folder, a .txt list or a list of those, got {value!r}")
    return [p if (p := Path(str(v)).expanduser()).is_absolute() else root / p for v in values]


def _first_listed(txt: Path) -> Path | None:
    """The first image a .txt split lists (resolved like list_images does), None for an empty list."""
    with open(txt, encoding="utf-8", errors="replace") as f:
        line = next((s.strip() for s in f if s.strip()), None)
    return None if line is None else (p if (p := Path(line)).is_absolute() else txt.parent / p)


def _missing(splits: dict[str, list[Path] | None]) -> list[tuple[str, Path]]:
    """(key, path) of split entries that do not exist; a .txt list counts as missing while its first image is."""
    out = []
    for key, entries in splits.items():
        for p in entries or []:
            if not p.exists():
                out.append((key, p))
            elif p.is_file() and p.suffix == ".txt" and (first := _first_listed(p)) is not None and not first.exists():
                out.append((key, first))
    return out


def _fetch(cfg: dict, root: Path, yaml_file: Path) -> None:
    """Run the YAML's `generate` or `download` instructions (never code)."""
    if cfg.get("generate"):
        gen = cfg["generate"]
        if not isinstance(gen, dict) or gen.get("kind", "shapes") != "shapes":
            raise DatasetError(f"{yaml_file}: key 'generate' must be a mapping with kind: shapes, got {gen!r}")
        from .synthetic import generate_shapes

        params = {k: int(v) for k, v in gen.items() if k in ("n_train", "n_val", "imgsz", "seed")}
        generate_shapes(root, **params)
        return
    items = cfg["download"] if isinstance(cfg["download"], list) else [cfg["download"]]
    for item in items:
        url, into = (item.get("url"), item.get("into")) if isinstance(item, dict) else (item, None)
        if not isinstance(url, str):
            raise DatasetError(f"{yaml_file}: key 'download' entries must be URLs or {{url, into}}, got {item!r}")
        dest = root.parent / into if into else root.parent
        download_and_extract(url, dest, loose_dest=None if into else root, yaml_file=yaml_file)


def check_dataset(data: str | Path, autodownload: bool = True) -> dict:
    """Resolve and check a dataset; download or generate it first when the YAML says how and it is missing.

    Returns {"yaml_file", "path" (root Path), "train", "val" (lists of folder/.txt Paths), "test" (list or None),
    "names" ({int: str}), "nc", "download"}. Raises DatasetError naming the YAML and the key for any problem.
    """
    yaml_file, bundled = find_yaml(data)
    cfg = load_yaml(yaml_file)
    if "validation" in cfg and "val" not in cfg:
        cfg["val"] = cfg.pop("validation")
    for key in ("train", "val"):
        if cfg.get(key) in (None, "", []):
            raise DatasetError(f"{yaml_file}: key '{key}' is missing; add e.g. '{key}: images/{key}'")
    names = parse_names(cfg, yaml_file)
    root = resolve_root(cfg, yaml_file, bundled)
    splits = {k: _split_entries(cfg, k, root, yaml_file) for k in SPLITS}
    missing = _missing(splits)
    if missing and (cfg.get("generate") or (cfg.get("download") and autodownload)):
        _fetch(cfg, root, yaml_file)
        missing = _missing(splits)
    if missing:
        key, p = missing[0]
        hint = "it is downloaded when autodownload is on" if cfg.get("download") else "fix 'path' or the split"
        raise DatasetError(f"{yaml_file}: key '{key}': {p} does not exist (dataset root {root}); {hint}")
    for key, entries in splits.items():
        if entries and not list_images(entries):
            raise DatasetError(
                f"{yaml_file}: key '{key}': no images ({', '.join(IMG_FORMATS)}) in {', '.join(map(str, entries))}"
            )
    return {
        "yaml_file": str(yaml_file),
        "path": root,
        "train": splits["train"],
        "val": splits["val"],
        "test": splits["test"],
        "names": names,
        "nc": len(names),
        "download": cfg.get("download"),
    }
