"""appliance.validate: msgspec conversion with errors in words, and the memory it exists for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from appliance.config import AppConfig, parse_config, replace
from appliance.errors import ConfigError
from appliance.setup import forms
from appliance.sim.scenario import parse_scenario


def reason(data: dict[str, object]) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.key, info.value.reason


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"setup": {"port": 80.5}}, "setup.port", "valid integer, not a number with a fractional part"),
        ({"setup": {"port": True}}, "setup.port", "valid integer, not a boolean"),
        ({"camera": {"rotation": "x"}}, "camera.rotation", "Input should be 0, 90, 180 or 270"),
        ({"screen": {"language": 3}}, "screen.language", "Input should be 'en', 'de', 'fr' or 'es'"),
        ({"thermal": {"idle_after_s": 0}}, "thermal.idle_after_s", "Input should be greater than 0"),
        ({"publisher": {"mic_device": ""}}, "publisher.mic_device", "at least 1 character"),
        ({"paths": {"run_dir": 5}}, "paths.run_dir", "a path, written as a string"),
        ({"bus": {"allowed_groups": ["a", "b\udcff"]}}, "bus.allowed_groups.1", "valid Unicode text"),
    ],
)
def test_messages_name_the_key_and_say_what_is_wrong(data: dict[str, object], key: str, message: str) -> None:
    got_key, got = reason(data)
    assert got_key == key and message in got, got


def test_lax_values_as_before() -> None:
    config = parse_config({"setup": {"port": "8081"}, "screen": {"sounds": "false"}, "gpio": {"relay": 23.0}})
    assert (config.setup.port, config.screen.sounds, config.gpio.relay) == (8081, False, 23)


def test_paths_are_paths_and_replace_takes_a_path(tmp_path: Path) -> None:
    config = replace(AppConfig(), bus={"socket": tmp_path / "bus.sock"}, paths={"run_dir": str(tmp_path)})
    assert config.bus.socket == tmp_path / "bus.sock" and isinstance(config.paths.run_dir, Path)
    assert config.paths.run_dir / "x" == tmp_path / "x"


def test_a_computed_scenario_may_hold_numpy_floats() -> None:
    person = {"name": "a", "enter": np.float64(0.0), "distance": np.float64(0.45)}
    scenario = parse_scenario({"name": "n", "duration": 10.0, "person": [person]})
    assert type(scenario.people[0].distance) is float and scenario.people[0].distance == 0.45


def test_the_form_reports_every_bad_field_at_once() -> None:
    values = forms.current_values(AppConfig())
    values.update({"screening.threshold_c": "34", "screening.units": "K", "gpio.relay": "99"})
    new, errors = forms.parse(values, {})
    assert new is None and set(errors) == {"screening.threshold_c", "screening.units", "gpio.relay"}
    _, errors = forms.parse(forms.current_values(AppConfig()), {"bus": {"nope": 1}})
    assert errors == {"_form": "bus.nope: Extra inputs are not permitted"}


KIOSK_MODULES = [
    "appliance.config",
    "appliance.sim.scenario",
    "appliance.bus.daemon",
    "appliance.thermal.daemon",
    "appliance.thermal.backend",
    "appliance.screening.daemon",
    "appliance.camera.daemon",
    "appliance.camera.sim_backend",
    "appliance.publisher.daemon",
    "appliance.screen.daemon",
    "appliance.setup.daemon",
]


def test_no_kiosk_daemon_imports_pydantic() -> None:
    # Defining the first pydantic model costs a process ~15 MB of RSS, and seven kiosk daemons
    # share a memory budget: pydantic is for the hosted room service only.
    code = (
        "import importlib, sys\n"
        f"for name in {KIOSK_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'pydantic' in sys.modules:\n"
        "        sys.exit(f'{name} imported pydantic')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
