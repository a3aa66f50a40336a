"""User settings (datasets_dir, weights_dir, runs_dir, weights_url) in a JSON file in the user config folder.

The folder is `$YOLOSEG_CONFIG_DIR` if set, else `$XDG_CONFIG_HOME/yoloseg` or `~/.config/yoloseg`. Nothing is
read or written until a setting is asked for. Environment variables override the file:
YOLOSEG_DATASETS_DIR, YOLOSEG_WEIGHTS_DIR, YOLOSEG_RUNS_DIR, YOLOSEG_WEIGHTS_URL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .files import atomic_write_text, increment_path

DEFAULT_WEIGHTS_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0"


def config_dir() -> Path:
    """The folder that holds settings.json."""
    if os.environ.get("YOLOSEG_CONFIG_DIR"):
        return Path(os.environ["YOLOSEG_CONFIG_DIR"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "yoloseg"


def settings_file() -> Path:
    return config_dir() / "settings.json"


def default_settings() -> dict[str, Any]:
    return {
        "datasets_dir": "datasets",
        "weights_dir": str(config_dir() / "weights"),
        "runs_dir": "runs",
        "weights_url": DEFAULT_WEIGHTS_URL,
    }


_ENV = {
    "datasets_dir": "YOLOSEG_DATASETS_DIR",
    "weights_dir": "YOLOSEG_WEIGHTS_DIR",
    "runs_dir": "YOLOSEG_RUNS_DIR",
    "weights_url": "YOLOSEG_WEIGHTS_URL",
}


def load_settings() -> dict[str, Any]:
    """Defaults, updated by the settings file (if readable), then by environment variables."""
    values = default_settings()
    f = settings_file()
    if f.is_file():
        try:
            stored = json.loads(f.read_text())
            if isinstance(stored, dict):
                values.update({k: v for k, v in stored.items() if k in values})
        except (OSError, json.JSONDecodeError):
            pass  # a corrupt settings file falls back to defaults; `yolo settings reset` rewrites it
    for key, env in _ENV.items():
        if os.environ.get(env):
            values[key] = os.environ[env]
    return values


def get_setting(key: str) -> Any:
    return load_settings()[key]


def update_settings(**kwargs: Any) -> dict[str, Any]:
    """Validate keys, merge into the settings file and write it atomically. Returns the new settings."""
    values = default_settings()
    f = settings_file()
    if f.is_file():
        try:
            values.update(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            pass
    for k, v in kwargs.items():
        if k not in values:
            raise KeyError(f"'{k}' is not a valid setting; valid settings are {sorted(values)}")
        values[k] = str(v)
    atomic_write_text(f, json.dumps(values, indent=2))
    return values


def reset_settings() -> dict[str, Any]:
    values = default_settings()
    atomic_write_text(settings_file(), json.dumps(values, indent=2))
    return values


def resolve_save_dir(args: dict[str, Any], default_name: str) -> Path:
    """The run folder <project or runs_dir/task>/<name or default_name>, incremented (train2, ...) unless exist_ok."""
    project = Path(args.get("project") or Path(get_setting("runs_dir")) / (args.get("task") or "segment"))
    name = args.get("name") or default_name
    return increment_path(project / name, exist_ok=bool(args.get("exist_ok")), mkdir=True)
