"""Scene time: one function of the system-wide monotonic clock, so every sim process agrees on "now"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.sim.clock import EPOCH_ENV, bundled_names, load_sim_scenario, scene_time, sim_epoch
from appliance.sim.scenario import Scenario, parse_scenario


def scenario(loop: bool, duration: float = 100.0) -> Scenario:
    return parse_scenario({"name": "t", "duration": duration, "loop": loop})


def test_looping_scenarios_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EPOCH_ENV, raising=False)
    looping = scenario(loop=True)
    assert scene_time(looping, 250.0) == pytest.approx(50.0)
    assert scene_time(looping, 1234.5, epoch=1000.0) == pytest.approx(34.5)
    assert scene_time(looping, 900.0, epoch=1000.0) == pytest.approx(0.0)  # before the epoch it still wraps


def test_one_shot_scenarios_play_once_then_hold() -> None:
    once = scenario(loop=False)
    assert scene_time(once, 1042.0, epoch=1000.0) == pytest.approx(42.0)
    assert scene_time(once, 999.0, epoch=1000.0) == 0.0
    assert scene_time(once, 5000.0, epoch=1000.0) == 100.0


def test_epoch_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EPOCH_ENV, "1000.5")
    assert sim_epoch() == 1000.5
    assert scene_time(scenario(loop=False), 1010.5) == pytest.approx(10.0)
    monkeypatch.setenv(EPOCH_ENV, "soon")
    with pytest.raises(ConfigError, match=EPOCH_ENV):
        sim_epoch()
    monkeypatch.setenv(EPOCH_ENV, "nan")
    with pytest.raises(ConfigError, match="monotonic"):
        sim_epoch()


def test_defaults_to_now_and_two_processes_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EPOCH_ENV, raising=False)
    demo = load_sim_scenario("demo")
    before = time.monotonic() % demo.duration
    mine = scene_time(demo)
    code = (
        "import time; from appliance.sim.clock import load_sim_scenario, scene_time; "
        "s = load_sim_scenario('demo'); print(repr(time.monotonic()), repr(scene_time(s)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    their_now, theirs = (float(v) for v in out.split())
    assert mine == pytest.approx(before, abs=0.05)
    # The other process, asked later, is exactly as much further into the scene as its clock says.
    assert theirs == pytest.approx(scene_time(demo, their_now), abs=1e-3)  # read microseconds apart
    assert (theirs - mine) % demo.duration == pytest.approx((their_now - before) % demo.duration, abs=0.05)


def test_scenario_names_and_paths(tmp_path: Path) -> None:
    assert "demo" in bundled_names()
    assert load_sim_scenario("demo").name == "demo"
    with pytest.raises(ConfigError, match=r"sim\.scenario: no bundled scenario named 'dmeo'.*demo"):
        load_sim_scenario("dmeo")
    own = tmp_path / "mine.toml"
    own.write_text('name = "mine"\nduration = 5.0\n')
    assert load_sim_scenario(str(own)).name == "mine"
    with pytest.raises(ConfigError, match="cannot read"):
        load_sim_scenario(str(tmp_path / "absent.toml"))
