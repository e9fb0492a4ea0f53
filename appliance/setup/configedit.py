"""Change keys in the config file without losing its comments, validated, written atomically.

The shipped config is heavily commented (config/appliance.toml), and a technician may have
added notes of their own, so the file is edited line by line rather than re-serialised:
a key's value is replaced in place (its inline comment kept), a commented-out example
("# relay = 23") is uncommented, a missing key is added at the end of its section, a missing
section at the end of the file.

Safety: the edited text is parsed again and must validate to exactly the config that was
asked for; otherwise nothing is written (ConfigError). The write is atomic (appliance.atomic),
so the daemons, which read the file at start, see the old file or the new one.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.atomic import atomic_write
from appliance.config import AppConfig, parse_config
from appliance.errors import ConfigError

Value = bool | int | float | str | None
Changes = Mapping[tuple[str, str], Value]

_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?$")
_OTHER_TABLE = re.compile(r"^\s*\[")


def toml_value(value: Value) -> str:
    """A scalar as TOML. None is written as "none", the config's word for a part not fitted
    (TOML has no null); only Pin fields accept it, and validation checks that."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("TOML config values must be finite")
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    # JSON's string escapes are a subset of TOML's basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def _key_line(key: str) -> re.Pattern[str]:
    return re.compile(rf"^(\s*){re.escape(key)}(\s*=\s*)(.*)$")


def _commented_key(key: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")


def _split_value(rest: str) -> tuple[str, str]:
    """(value, trailing comment with its leading space) of what follows '='."""
    if rest.startswith('"'):
        i = 1
        while i < len(rest):
            if rest[i] == "\\":
                i += 2
                continue
            if rest[i] == '"':
                break
            i += 1
        end = i + 1
    elif rest.startswith("'"):
        end = rest.find("'", 1) + 1 or len(rest)
    else:
        hash_at = rest.find("#")
        end = len(rest) if hash_at < 0 else hash_at
    value, tail = rest[:end].rstrip(), rest[end:]
    gap = rest[len(value) : end]
    return value, gap + tail


def set_keys(text: str, changes: Changes) -> str:
    """The text with each (section, key) set to its value."""
    lines = text.splitlines()
    for (section, key), value in changes.items():
        rendered = toml_value(value)
        start, end = _section_span(lines, section)
        if start is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines += ["", f"[{section}]", f"{key} = {rendered}"]
            continue
        pattern, commented = _key_line(key), _commented_key(key)
        done = False
        for i in range(start + 1, end):
            m = pattern.match(lines[i])
            if m:
                _, tail = _split_value(m.group(3))
                lines[i] = f"{m.group(1)}{key}{m.group(2)}{rendered}{tail}"
                done = True
                break
        if not done:
            for i in range(start + 1, end):
                if commented.match(lines[i]):
                    lines[i] = f"{key} = {rendered}"
                    done = True
                    break
        if not done:
            last = start
            for i in range(start + 1, end):
                if lines[i].strip():
                    last = i
            lines.insert(last + 1, f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def _section_span(lines: list[str], section: str) -> tuple[int | None, int]:
    start: int | None = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m and m.group(1) == section:
            start = i
        elif start is not None and _OTHER_TABLE.match(line):
            return start, i
    return start, len(lines)


def read_data(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and parsed data; a missing file is empty (all defaults)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None


def merged(data: dict[str, Any], changes: Mapping[tuple[str, str], Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, key), value in changes.items():
        out.setdefault(section, {})[key] = value
    return out


def write_changes(path: Path, changes: Changes) -> AppConfig:
    """Set the keys in the file, validated; returns the new config. ConfigError (naming the
    key) when the result is not a valid config; nothing is written then."""
    text, data = read_data(path)
    wanted = parse_config(
        merged(data, {k: "none" if v is None else v for k, v in changes.items()}), str(path)
    )
    new_text = set_keys(text, changes)
    try:
        got = parse_config(tomllib.loads(new_text), str(path))
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise ConfigError(
            str(path), "", f"editing the file would break it ({exc}); nothing was written"
        ) from None
    if got != wanted:
        raise ConfigError(str(path), "", "the edited file would not say what was asked; nothing was written")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o644
    try:
        # Through a symlink to the file it names (a config kept on the boot partition, say):
        # replacing the link itself would cut the file off from where it is edited.
        atomic_write(os.path.realpath(path), new_text, mode=mode)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot write: {exc.strerror}") from None
    return got
