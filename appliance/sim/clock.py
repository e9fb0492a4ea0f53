"""Scene time: the one clock every simulator reads, so that every sim shows the same moment of a scenario.

The thermal sim (`appliance run thermal` with thermal.backend = "sim") and the camera sim run in different
processes. For the person seen in the video to be the person seen by the thermal sensor, both ask this
module where in the scenario "now" is:

    from appliance.sim.clock import load_sim_scenario, scene_time

    scenario = load_sim_scenario(config.sim.scenario)   # "demo" or a path to a scenario file
    t = scene_time(scenario)                             # seconds into the scenario, right now
    regions = scenario.camera_view(t)                    # the camera sim's view of that moment

How it stays shared without talking: scene time is computed from `time.monotonic()`, which on Linux is
CLOCK_MONOTONIC, one clock for the whole system (time since boot), so two processes asking at the same
instant get the same value. No process has to start first and nothing is exchanged.

    elapsed = now - epoch      epoch = $APPLIANCE_SIM_EPOCH (a time.monotonic() value) or 0.0 (boot)
    loop = true:   scene time = elapsed mod duration (the scenario repeats for as long as the sims run)
    loop = false:  scene time = elapsed clamped to [0, duration] (played once, then it holds its last moment)

A looping scenario needs no epoch: every process that looks at the clock agrees on the phase. A one-shot
scenario needs a common start, which is what APPLIANCE_SIM_EPOCH gives (a test or a supervisor sets it in
the environment of every sim it starts, e.g. to its own time.monotonic() at spawn).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from appliance.errors import ConfigError
from appliance.sim.scenario import Scenario, bundled_scenario, load_scenario

EPOCH_ENV = "APPLIANCE_SIM_EPOCH"


def sim_epoch() -> float:
    """The monotonic time at which scene time 0 was, from $APPLIANCE_SIM_EPOCH; 0.0 (boot) when unset."""
    text = os.environ.get(EPOCH_ENV, "").strip()
    if not text:
        return 0.0
    try:
        epoch = float(text)
    except ValueError:
        epoch = math.nan
    if not math.isfinite(epoch):
        raise ConfigError(
            "environment", EPOCH_ENV, f"must be a time.monotonic() value in seconds, not {text!r}"
        )
    return epoch


def scene_time(scenario: Scenario, now: float | None = None, *, epoch: float | None = None) -> float:
    """Seconds into `scenario` at monotonic time `now` (default: this instant).

    `epoch` overrides $APPLIANCE_SIM_EPOCH; pass it only when you hold the start yourself (tests).
    """
    now = time.monotonic() if now is None else now
    elapsed = now - (sim_epoch() if epoch is None else epoch)
    if scenario.loop:
        return elapsed % scenario.duration
    return min(max(elapsed, 0.0), scenario.duration)


def bundled_names() -> list[str]:
    from importlib import resources

    folder = resources.files("appliance.sim") / "scenarios"
    return sorted(
        entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml")
    )


def load_sim_scenario(spec: str) -> Scenario:
    """config.sim.scenario: a bundled name ("demo" -> appliance/sim/scenarios/demo.toml) or a file path.

    A value with a path separator or a .toml suffix is a path; anything else is a bundled name.
    """
    if os.sep in spec or "/" in spec or spec.endswith(".toml"):
        return load_scenario(Path(spec).expanduser())
    names = bundled_names()
    if spec not in names:
        raise ConfigError(
            "config",
            "sim.scenario",
            f"no bundled scenario named {spec!r} (bundled: {', '.join(names)}); give a path to use a file",
        )
    return bundled_scenario(spec)
