"""Editing the config file: values in place, comments kept, validated, atomic, all or nothing."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

from appliance.config import AppConfig, parse_config
from appliance.errors import ConfigError
from appliance.setup import forms
from appliance.setup.configedit import set_keys, toml_value, write_changes

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "appliance.toml"


def test_values_are_valid_toml() -> None:
    for value, text in [
        (True, "true"),
        (3, "3"),
        (38.0, "38.0"),
        (1e-05, "1e-05"),
        ("de", '"de"'),
        (None, '"none"'),
    ]:
        assert toml_value(value) == text
        assert tomllib.loads(f"k = {toml_value(value)}")["k"] == ("none" if value is None else value)
    tricky = 'a "quoted" \\ path'
    assert tomllib.loads("k = " + toml_value(tricky))["k"] == tricky
    with pytest.raises(ValueError):
        toml_value(float("nan"))


def test_set_keys_keeps_comments_and_layout() -> None:
    text = (
        "# head\n\n[screening]\n# the policy\nthreshold_c = 38.0  # degC, site policy\n"
        'units = "C"\n\n[gpio]\n# relay = 23\nrelay_enabled = false\n'
    )
    out = set_keys(
        text,
        {
            ("screening", "threshold_c"): 37.8,
            ("gpio", "relay"): 23,
            ("screen", "language"): "de",
            ("screening", "hysteresis_c"): 0.3,
        },
    )
    assert "threshold_c = 37.8  # degC, site policy\n" in out
    assert "# the policy\n" in out and out.startswith("# head\n")
    assert "\nrelay = 23\n" in out and "# relay = 23" not in out
    data = tomllib.loads(out)
    assert data["screen"] == {"language": "de"}
    assert data["screening"] == {"threshold_c": 37.8, "units": "C", "hysteresis_c": 0.3}
    # The new key joined its section, right after its last key.
    assert out.index("hysteresis_c") < out.index("[gpio]")


def test_set_keys_handles_strings_with_hashes() -> None:
    out = set_keys(
        '[publisher]\nroom_url = "https://r.example/#x"  # the room\n',
        {("publisher", "room_url"): "https://n/"},
    )
    assert out == '[publisher]\nroom_url = "https://n/"  # the room\n'


def test_shipped_config_changes_only_the_asked_line(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    shutil.copy(SHIPPED, path)
    os.chmod(path, 0o640)
    before = path.read_text().splitlines()
    config = write_changes(path, {("screening", "threshold_c"): 37.5, ("gpio", "relay"): None})
    after = path.read_text().splitlines()
    assert config.screening.threshold_c == 37.5 and config.gpio.relay is None
    diff = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert diff == [("threshold_c = 38.0", "threshold_c = 37.5"), ("# relay = 23", 'relay = "none"')]
    assert os.stat(path).st_mode & 0o777 == 0o640, "the file keeps its mode"


def test_invalid_changes_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "appliance.toml"
    shutil.copy(SHIPPED, path)
    before = path.read_bytes()
    inode = path.stat().st_ino
    with pytest.raises(ConfigError, match=r"screening\.threshold_c"):
        write_changes(path, {("screening", "threshold_c"): 50.0})
    with pytest.raises(ConfigError, match="distance_min_m"):
        write_changes(path, {("screening", "distance_min_m"): 0.9})
    with pytest.raises(ConfigError):
        write_changes(path, {("screening", "no_such_key"): 1})
    assert path.read_bytes() == before and path.stat().st_ino == inode
    assert not [p for p in tmp_path.iterdir() if p.name != "appliance.toml"], "no temporary files left"


def test_a_symlinked_config_stays_a_link_and_its_file_changes(tmp_path: Path) -> None:
    """/etc/appliance/appliance.toml may be a link to a file elsewhere (the boot partition,
    where it can be edited from another computer): the edit goes to that file, the link stays."""
    real = tmp_path / "boot" / "appliance.toml"
    real.parent.mkdir()
    shutil.copy(SHIPPED, real)
    link = tmp_path / "etc" / "appliance.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    write_changes(link, {("screening", "threshold_c"): 37.5})
    assert link.is_symlink() and link.resolve() == real
    assert tomllib.loads(real.read_text())["screening"]["threshold_c"] == 37.5
    assert [p.name for p in link.parent.iterdir()] == ["appliance.toml"], "nothing left next to the link"


def test_missing_file_is_created_with_the_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "appliance.toml"
    config = write_changes(path, {("screen", "language"): "fr"})
    assert config.screen.language == "fr"
    assert tomllib.loads(path.read_text()) == {"screen": {"language": "fr"}}


# --- the settings form ---------------------------------------------------------------------


def form_of(config: AppConfig, **overrides: str) -> dict[str, str]:
    values = forms.current_values(config)
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return values


def test_form_round_trips_the_current_config() -> None:
    config = AppConfig()
    new, errors = forms.parse(form_of(config), {})
    assert errors == {} and new == config and forms.changed(config, new) == {}


def test_form_accepts_a_decimal_comma_and_a_missing_relay() -> None:
    config = AppConfig()
    new, errors = forms.parse(form_of(config, screening__threshold_c="37,6", gpio__relay=""), {})
    assert errors == {} and new is not None
    assert new.screening.threshold_c == 37.6 and new.gpio.relay is None
    assert forms.changed(config, new) == {("screening", "threshold_c"): 37.6}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("screening.threshold_c", "nan", "not a finite number"),
        ("screening.threshold_c", "hot", "not a number"),
        ("screening.threshold_c", "", "required"),
        ("screening.threshold_c", "34", "greater than or equal to 35"),
        ("screening.units", "K", "'C' or 'F'"),
        ("screen.language", "xx", "'en'"),
        ("gpio.relay", "99", "less than or equal to 53"),
        ("gpio.relay_open_s", "0", "greater than 0"),
        ("screening.distance_min_m", "0.9", "less than the farthest"),
    ],
)
def test_form_errors_name_the_field(field: str, value: str, problem: str) -> None:
    values = forms.current_values(AppConfig())
    values[field] = value
    new, errors = forms.parse(values, {})
    assert new is None
    assert problem in errors[field], errors


def test_form_keeps_the_rest_of_the_file() -> None:
    data = {"paths": {"state_dir": "/srv/kiosk"}, "screening": {"retention_days": 90}}
    new, errors = forms.parse(forms.current_values(parse_config(data)), data)
    assert errors == {} and new is not None
    assert str(new.paths.state_dir) == "/srv/kiosk" and new.screening.retention_days == 90
