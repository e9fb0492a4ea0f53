"""config/appliance.toml is the model's defaults, written out: the two can never drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.config import AppConfig, load_config, parse_config

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "appliance.toml"

_SECTION = re.compile(r"^\[([a-z_]+)\]\s*$")
_KEY = re.compile(r"^([a-z_][a-z0-9_]*)\s*=")
# A key without a default (None) is shown commented out, as "# key = example".
_COMMENTED_KEY = re.compile(r"^# ([a-z_][a-z0-9_]*) = ")


def _sections() -> dict[str, type[msgspec.Struct]]:
    out: dict[str, type[msgspec.Struct]] = {}
    for field in msgspec.structs.fields(AppConfig):
        assert isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
        out[field.encode_name] = field.type
    return out


def _keys(model: type[msgspec.Struct]) -> list[str]:
    return [field.encode_name for field in msgspec.structs.fields(model)]


def _default(field: msgspec.structs.FieldInfo) -> object:
    return field.default_factory() if field.default is msgspec.NODEFAULT else field.default


def _layout(text: str) -> dict[str, list[tuple[str, bool]]]:
    """Section -> its keys in file order, each with whether it is commented out."""
    layout: dict[str, list[tuple[str, bool]]] = {}
    section: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if m := _SECTION.match(line):
            section = m.group(1)
            assert section not in layout, f"line {number}: [{section}] appears twice"
            layout[section] = []
        elif (m := _KEY.match(line)) or (m := _COMMENTED_KEY.match(line)):
            assert section is not None, f"line {number}: key {m.group(1)!r} before any section"
            layout[section].append((m.group(1), line.startswith("#")))
    return layout


@pytest.fixture(scope="module")
def text() -> str:
    return SHIPPED.read_text(encoding="utf-8")


def test_parses_to_the_model_defaults_field_by_field(text: str) -> None:
    shipped = parse_config(tomllib.loads(text), str(SHIPPED))
    defaults = AppConfig()
    for section in _sections():
        got, want = getattr(shipped, section), getattr(defaults, section)
        for key in _keys(type(want)):
            assert getattr(got, key) == getattr(want, key), f"{section}.{key} differs from config.py"
    assert shipped == defaults


def test_loads_through_the_file_loader() -> None:
    assert load_config(SHIPPED, apply_env=False) == AppConfig()


def test_every_field_appears_in_model_order(text: str) -> None:
    layout = _layout(text)
    sections = _sections()
    assert list(layout) == list(sections), "sections differ from AppConfig's, or are out of order"
    for section, model in sections.items():
        keys = [key for key, _ in layout[section]]
        assert keys == _keys(model), f"[{section}]: keys differ from {model.__name__}"


def test_only_keys_without_a_default_are_commented_out(text: str) -> None:
    # A commented-out key with a real default would hide a setting a technician may look for.
    sections = _sections()
    for section, keys in _layout(text).items():
        fields = {field.encode_name: field for field in msgspec.structs.fields(sections[section])}
        for key, commented in keys:
            has_default = _default(fields[key]) is not None
            assert commented != has_default, f"{section}.{key}: commented={commented}"


def test_commented_out_examples_are_valid_values(text: str) -> None:
    uncommented = "\n".join(line[2:] if _COMMENTED_KEY.match(line) else line for line in text.splitlines())
    data: dict[str, Any] = tomllib.loads(uncommented)
    config = parse_config(data, "config/appliance.toml with its examples uncommented")
    assert config.publisher.room_url is not None
    assert config != AppConfig()


def test_every_key_has_a_comment(text: str) -> None:
    # Each key is preceded by a comment or carries one inline (the choices of a backend), or
    # shares the comment of the key above it (width/height pairs).
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        if _KEY.match(line) or _COMMENTED_KEY.match(line):
            described = previous.startswith("#") or " # " in line or _KEY.match(previous)
            assert described, f"line {number}: {line.split('=')[0].strip()} has no comment"
        previous = line
