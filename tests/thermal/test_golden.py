"""The numpy-free thermal path computes what the numpy one did, number for number.

tests/thermal/data/golden.json was written by golden.compute() running the numpy implementation of the
scene renderer, the fake AMG8833, the driver, the sampling policy and the recording format (before they
became plain Python for issue 8's memory budget), on the demo scenario with a radiator and every kind of
sensor fault. The same run now must give the same numbers exactly: rendered fields (float64), pixels
(float32 values), thermistor readings, interrupt masks, plans, fixture counts and masks, backgrounds,
the registers at the end, the JSONL lines, and one session of the screening corpus (appliance/sim/suite.py).

The random draws come from numpy's Generator through suite.NumpyNoise, so they are the draws the numpy
implementation made; the daemon's own sim draws from the standard library (see fake_amg8833.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import golden  # tests/thermal/golden.py: the run itself, shared with the script that wrote the file
import pytest

from appliance.sim import suite
from appliance.sim.scenario import Scenario
from appliance.sim.thermal_scene import ThermalScene
from appliance.thermal.fake_amg8833 import FakeAMG8833
from appliance.thermal.jsonl import frame_json

GOLDEN = Path(__file__).parent / "data" / "golden.json"


def make_scene(scenario: Scenario, seed: int) -> ThermalScene:
    return ThermalScene(scenario, noise=suite.NumpyNoise(seed))


def make_device(scene: ThermalScene, *, seed: int, **options: object) -> FakeAMG8833:
    return FakeAMG8833(scene, noise=suite.NumpyNoise(seed), **options)  # type: ignore[arg-type]


def suite_session() -> list[tuple[float, float, list[float]]]:
    plan = suite.plan_suite("test", min_people=1)[0]
    frames, _ = suite.record_session(plan)
    return [(f.t, f.thermistor, golden.flat(f.pixels)) for f in frames]


@pytest.fixture(scope="module")
def results() -> tuple[dict[str, object], dict[str, object]]:
    now = golden.compute(make_scene, make_device, frame_json, suite_session)
    # Through JSON, as the golden file went: tuples become lists, nothing else changes.
    return json.loads(json.dumps(now)), json.loads(GOLDEN.read_text())


@pytest.mark.parametrize(
    "key",
    [
        "offset_c",
        "pixel_offsets_c",
        "fields",
        "frame_count",
        "first_frames",
        "frames",
        "event_count",
        "faults",
        "interrupts",
        "events",
        "first_lines",
        "jsonl",
        "registers",
        "suite_count",
        "suite_first",
        "suite",
    ],
)
def test_the_thermal_path_computes_what_the_numpy_one_did(
    results: tuple[dict[str, object], dict[str, object]], key: str
) -> None:
    now, before = results
    assert now[key] == before[key]


def test_the_golden_run_exercises_what_it_should(
    results: tuple[dict[str, object], dict[str, object]],
) -> None:
    """Interrupts, every fault kind, and a learned fixture happen in the golden run, so the comparison
    covers those paths."""
    now, _ = results
    faults = " ".join(str(f[2]) for f in now["faults"])  # type: ignore[attr-defined]
    for reason in ("failed: [Errno 121]", "frames are stuck", "outside -20.0..100.0"):
        assert reason in faults
    assert now["interrupts"]
