"""Command-line parsing: `yolo [TASK] MODE key=value ...` into a task, a mode and a dict of overrides.

Rules (those of the incumbent's `yolo` command):
- positional words: a task (segment, detect), a mode (train, val, predict, export, benchmark), in either order, or a
  special command (help, version, checks, settings, cfg, copy-cfg, convert) whose arguments are returned untouched;
- `key=value` splits on the first '='; spaces around '=' are tolerated (`imgsz = 320`, `imgsz= 320`, `imgsz =320`);
  bracketed lists split by the shell are re-joined (`classes=[0,` `2]`); a leading `--` and a trailing `,` are
  stripped with a warning;
- values: none / true / false in any case, Python literals (ints, floats such as 1e-3, lists, tuples), else the
  string itself; `name` and `project` are kept as typed;
- a bare key that accepts true/false (`show`, `save_txt`, `nms`) means key=true; any other bare key is an error.
Values are not validated here: `defaults.validate_args` does that, for the CLI and the Python API alike.
"""

from __future__ import annotations

import ast
from typing import Any

from ..utils.log import log
from .defaults import DEPRECATED, KEYS, MODES, TASKS, ConfigError, format_value, suggest

# word -> canonical special command
SPECIAL = {
    "help": "help",
    "-h": "help",
    "--help": "help",
    "version": "version",
    "--version": "version",
    "checks": "checks",
    "check": "checks",
    "settings": "settings",
    "setting": "settings",
    "cfg": "cfg",
    "copy-cfg": "copy-cfg",
    "copy_cfg": "copy-cfg",
    "convert": "convert",
}
OTHER_TASKS = ("classify", "pose", "obb", "semantic", "depth")
OTHER_MODES = ("track", "tune")
RAW_KEYS = ("name", "project")


def smart_value(text: str) -> Any:
    """'none' -> None, 'true'/'false' (any case) -> bool, Python literals -> their value, else the string."""
    lower = text.lower()
    if lower == "none":
        return None
    if lower in ("true", "false"):
        return lower == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _rejoin_brackets(tokens: list[str]) -> list[str]:
    """['classes=[0,', '2]'] -> ['classes=[0,2]']: the shell splits lists written with spaces."""
    out: list[str] = []
    depth = 0
    for tok in tokens:
        if depth > 0:
            out[-1] += tok
        else:
            out.append(tok)
        depth += tok.count("[") + tok.count("(") - tok.count("]") - tok.count(")")
    return out


def _merge_equals(tokens: list[str]) -> list[str]:
    """['imgsz', '=', '320'], ['imgsz=', '320'] and ['imgsz', '=320'] -> ['imgsz=320']."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if nxt is not None and "=" not in tok and nxt.startswith("=") and tok not in SPECIAL:
            tokens[i + 1] = tok + nxt  # 'imgsz' '=320' / 'imgsz' '=' '320': handled on the next turn
        elif tok.endswith("=") and tok.count("=") == 1 and nxt is not None and "=" not in nxt:
            out.append(tok + nxt)  # 'imgsz=' '320'
            i += 1
        else:
            out.append(tok)
        i += 1
    return out


def _clean(tok: str) -> str:
    """Strip a leading '--' / '-' from key=value words and a trailing ',' (both with a warning)."""
    if tok.startswith("-") and tok not in SPECIAL and len(tok) > 1 and tok.lstrip("-")[:1].isalpha():
        new = tok.lstrip("-")
        log.warning(f"WARNING: leading dashes are not needed: '{tok}' read as '{new}'.")
        tok = new
    if tok.endswith(",") and len(tok) > 1:
        new = tok.rstrip(",")
        log.warning(f"WARNING: trailing comma removed: '{tok}' read as '{new}'.")
        tok = new
    return tok


def normalize_tokens(argv: list[str]) -> list[str]:
    """Apply the re-joining and cleaning rules; every returned word is a bare word or a `key=value` pair."""
    tokens = [t for t in (a.strip() for a in argv) if t]
    return [_clean(t) for t in _merge_equals(_rejoin_brackets(tokens))]


def split_pair(tok: str) -> tuple[str, Any]:
    """'epochs=3' -> ('epochs', 3); 'name=001' -> ('name', '001')."""
    key, _, text = tok.partition("=")
    key = key.strip()
    text = text.strip()
    if not key:
        raise ConfigError(f"'{tok}' has no key before '=': write key=value, e.g. epochs=10.")
    if not text:
        raise ConfigError(f"'{tok}' has no value after '=': write {key}=<value>, or {key}=none to unset it.", key=key)
    return key, (text if key in RAW_KEYS else smart_value(text))


def parse_pairs(tokens: list[str]) -> dict[str, Any]:
    """key=value words to a dict (no key validation: used for settings and convert arguments)."""
    out = {}
    for tok in tokens:
        if "=" not in tok:
            raise ConfigError(f"'{tok}' is missing '=': write it as key=value.")
        key, value = split_pair(tok)
        out[key] = value
    return out


def _bare_word_error(word: str) -> ConfigError:
    """The error for a positional word that is neither a task, a mode, a special command nor a true/false key."""
    if word in KEYS or word in DEPRECATED:
        key = KEYS.get(word)
        value = None if key is None else key.example if key.default is None else key.default
        example = "" if value is None else f", e.g. {word}={format_value(value)}"
        return ConfigError(f"'{word}' is missing '=': write {word}=<value>{example}.", key=word)
    if word.lower() in OTHER_TASKS:
        return ConfigError(f"task '{word}' is not supported by yoloseg: valid tasks are {', '.join(TASKS)}.")
    if word.lower() in OTHER_MODES:
        return ConfigError(f"mode '{word}' is not supported by yoloseg: valid modes are {', '.join(MODES)}.")
    close = suggest(word, [*MODES, *TASKS, *(w for w in SPECIAL if not w.startswith("-"))], n=1)
    close = close or [f"{k}=..." for k in suggest(word, KEYS, n=1)]
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(
        f"'{word}' is not a valid mode, task or command.{hint} Valid modes are {', '.join(MODES)}; valid tasks are "
        f"{', '.join(TASKS)}; run 'yolo help' for usage.",
        suggestions=close,
    )


def _accepts_bool(word: str) -> bool:
    target = DEPRECATED.get(word, word)
    target = target if isinstance(target, str) else target[0]
    return target in KEYS and KEYS[target].accepts_bool


def parse_cli(argv: list[str]) -> tuple[str | None, str | None, dict[str, Any], str | None, list[str]]:
    """Parse command-line words.

    Returns (task, mode, overrides, special, extra): `special` is the special command (or None) and `extra` the words
    after it, left as they were (e.g. ['reset'] for `yolo settings reset`); for `yolo MODE help`, special is 'help'
    and extra is [MODE]. Overrides are raw values (deprecated keys not yet mapped). Raises ConfigError.
    """
    tokens = normalize_tokens(list(argv))
    task = mode = None
    overrides: dict[str, Any] = {}
    for i, tok in enumerate(tokens):
        word = tok.lower()
        if "=" in tok:
            key, value = split_pair(tok)
            overrides[key] = value
        elif SPECIAL.get(word) == "help":  # `yolo help`, `yolo help train`, `yolo train help`
            after = [t for t in tokens[i + 1 :] if t.lower() in MODES][:1]
            return task, mode, overrides, "help", [mode] if mode else after
        elif word in SPECIAL and i == 0:
            return task, mode, overrides, SPECIAL[word], tokens[1:]
        elif word in TASKS:
            if task and task != word:
                raise ConfigError(f"two tasks given ('{task}' and '{word}'): give one of {', '.join(TASKS)}.")
            task = word
        elif word in MODES:
            if mode and mode != word:
                raise ConfigError(f"two modes given ('{mode}' and '{word}'): give one of {', '.join(MODES)}.")
            mode = word
        elif _accepts_bool(tok):
            overrides[tok] = True
        else:
            raise _bare_word_error(tok)
    return task, mode, overrides, None, []
