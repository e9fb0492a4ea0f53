"""config/room.toml is RoomConfig's defaults, written out; and bad room configs are clear errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from appliance.errors import ConfigError
from appliance.room.config import RoomConfig, load_room_config, parse_room_config

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "room.toml"
_SECTION = re.compile(r"^\[([a-z_]+)\]\s*$")
_KEY = re.compile(r"^([a-z_][a-z0-9_]*)\s*=")
_COMMENTED_KEY = re.compile(r"^# ([a-z_][a-z0-9_]*) = ")


def _sections() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for name, field in RoomConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[name] = field.annotation
    return out


def test_shipped_file_is_the_defaults() -> None:
    shipped = load_room_config(SHIPPED)
    assert shipped == RoomConfig()


def test_every_key_of_every_section_is_in_the_file_in_model_order() -> None:
    layout: dict[str, list[tuple[str, bool]]] = {}
    section = None
    previous = ""
    for number, line in enumerate(SHIPPED.read_text().splitlines(), 1):
        if m := _SECTION.match(line):
            section = m.group(1)
            layout[section] = []
        elif line.startswith("# [["):
            section = None  # the [[ice_servers]] examples: an array of tables, checked below
        elif section is not None and ((m := _KEY.match(line)) or (m := _COMMENTED_KEY.match(line))):
            layout[section].append((m.group(1), line.startswith("#")))
            described = previous.startswith("#") or _KEY.match(previous) or _COMMENTED_KEY.match(previous)
            assert described, f"line {number}: {m.group(1)} has no comment"
        previous = line
    sections = _sections()
    assert list(layout) == list(sections)
    assert "# [[ice_servers]]" in SHIPPED.read_text()
    for name, model in sections.items():
        assert [k for k, _ in layout[name]] == list(model.model_fields), name
        for key, commented in layout[name]:
            has_default = model.model_fields[key].get_default(call_default_factory=True) is not None
            assert commented != has_default, f"{name}.{key}"


def test_the_commented_examples_are_valid(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    uncommented = "\n".join(
        line[2:]
        if _COMMENTED_KEY.match(line) or line.startswith(("# [[", "# urls", "# turn_credentials"))
        else line
        for line in text.splitlines()
    )
    data: dict[str, Any] = tomllib.loads(uncommented)
    data["turn"].pop("secret_file")  # one of the two, not both
    data["service"].pop("tls_cert")
    data["service"].pop("tls_key")
    config = parse_room_config(data)
    assert config.service.public_url == "https://room.example.com"
    assert [s.turn_credentials for s in config.ice_servers] == [False, True]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[service]\nport = 70000\n", "service.port"),
        ("[service]\nprot = 80\n", "service.prot"),
        ('[service]\npublic_url = "ftp://x"\n', "service.public_url"),
        ('[service]\ntls_cert = "/x.pem"\n', "service"),
        ("[pairing]\ninterval_s = 0\n", "pairing.interval_s"),
        ('[turn]\nsecret = "short"\n', "turn.secret"),
        ("[[ice_servers]]\nurls = []\n", "ice_servers.0.urls"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "room.toml"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as exc:
        load_room_config(path)
    assert exc.value.file == str(path) and exc.value.key == key


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_room_config(tmp_path / "nope.toml")
