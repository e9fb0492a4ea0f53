"""The screening accuracy suite: seeded sessions of people, recorded through the real driver, with truth.

Each session is a generated scenario (one room, one sensor, 3-5 people, sometimes two at once, sometimes
a hot cup, sometimes a sensor fault) rendered by ThermalScene, sampled by FakeAMG8833 at 10 fps and read
by the AMG8833 driver exactly as the daemon reads it. What the driver refuses (I2C errors, out-of-range
pixels, stuck frames past its limit) is missing from the recording, as it would be on a kiosk.

Two splits with disjoint seeds: fit the estimator on "train", measure it on "test", never the reverse.

    python -m appliance.sim.suite OUT_DIR --split test --people 200

writes OUT_DIR/recordings/<split>_<NNN>.jsonl and OUT_DIR/ground_truth.json:

    {"split": "test", "seeds": [...], "people": N, "sessions": [
        {"recording": "recordings/test_000.jsonl", "seed": 900000, "ambient_c": 24.1, "sensor_offset_c": 0.4,
         "frames": 312, "faults": [{"kind": "i2c_error", "start": 12.0, "duration": 1.5}],
         "scenario": {... the scenario, reloadable with parse_scenario ...},
         "people": [{"id": "test_000/p0", "enter": 1.0, "dwell_start": 2.5, "dwell_end": 7.0, "exit": 9.0,
                     "core_temp": 38.4, "label": "fever", "distance": 0.52,
                     "forehead_c": ..., "canthus_c": ..., "fault": false, "fault_kinds": [],
                     "concurrent": false}, ...]}]}

Labels by core temperature: normal < 37.3 <= borderline < 38.0 <= fever. Judge each person on their
dwell window (holding still); a person whose window overlaps a fault should get "no reading", not a guess.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.atomic import atomic_write
from appliance.errors import SensorFault
from appliance.sim.scenario import Scenario, parse_scenario
from appliance.sim.thermal_scene import ThermalScene, canthus_temperature, forehead_temperature
from appliance.thermal.amg8833 import AMG8833
from appliance.thermal.fake_amg8833 import FakeAMG8833, FakeI2C, ManualClock
from appliance.thermal.recording import RecordedFrame, write_recording
from appliance.thermal.registers import ADDRESS_DEFAULT

log = logging.getLogger(__name__)

# Disjoint seed ranges: a training seed can never turn up in the test split.
SPLIT_SEED_BASE = {"train": 100_000, "test": 900_000}
MAX_SESSIONS_PER_SPLIT = 100_000

FRAME_PERIOD_S = 0.1
NORMAL_RANGE = (36.0, 37.2)
BORDERLINE_RANGE = (37.3, 37.9)
FEVER_RANGE = (38.0, 40.0)
DISTANCE_RANGE = (0.3, 0.8)
AMBIENT_RANGE = (18.0, 30.0)


def label_for(core_c: float) -> str:
    if core_c >= 38.0:
        return "fever"
    if core_c >= 37.3:
        return "borderline"
    return "normal"


def session_seeds(split: str, count: int) -> list[int]:
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEED_BASE)}, not {split!r}")
    if count > MAX_SESSIONS_PER_SPLIT:
        raise ValueError(f"at most {MAX_SESSIONS_PER_SPLIT} sessions per split")
    base = SPLIT_SEED_BASE[split]
    return [base + i for i in range(count)]


def _u(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return round(float(rng.uniform(*bounds)), 3)


def plan_session(seed: int, name: str) -> Scenario:
    """A random but seeded session: the same seed always gives the same scenario."""
    rng = np.random.default_rng(seed)
    people: list[dict[str, Any]] = []
    t = 1.0
    count = int(rng.integers(3, 6))
    pair_next = False
    for i in range(count):
        category = rng.choice(["normal", "borderline", "fever"], p=[0.55, 0.15, 0.30])
        core = _u(
            rng, {"normal": NORMAL_RANGE, "borderline": BORDERLINE_RANGE, "fever": FEVER_RANGE}[category]
        )
        approach, dwell, leave = _u(rng, (1.0, 2.5)), _u(rng, (3.0, 7.0)), _u(rng, (1.0, 2.0))
        lateral = _u(rng, (-0.12, 0.12))
        if pair_next:
            # Two at once: this one arrives while the previous one stands, on the other side.
            previous = people[-1]
            previous["lateral"] = -0.25 if previous["lateral"] <= 0 else 0.25
            lateral = -previous["lateral"] + _u(rng, (-0.04, 0.04))
            t = previous["enter"] + previous["approach"] + _u(rng, (0.0, 1.5))
        people.append(
            {
                "name": f"p{i}",
                "enter": round(t, 3),
                "approach": approach,
                "dwell": dwell,
                "leave": leave,
                "distance": _u(rng, DISTANCE_RANGE),
                "lateral": lateral,
                "face_height": _u(rng, (-0.12, 0.12)),
                "core_temp": core,
                "sway": _u(rng, (0.0, 0.02)),
            }
        )
        pair_next = not pair_next and i < count - 1 and rng.random() < 0.3
        t = max(t, people[-1]["enter"]) + approach + dwell + leave + _u(rng, (0.5, 2.0))
    end = max(p["enter"] + p["approach"] + p["dwell"] + p["leave"] for p in people) + 1.0
    objects = []
    if rng.random() < 0.3:
        side = 1.0 if rng.random() < 0.5 else -1.0
        objects.append(
            {
                "name": "cup",
                "enter": 0.0,
                "distance": _u(rng, (0.35, 0.7)),
                "lateral": round(side * _u(rng, (0.12, 0.3)), 3),
                "height": _u(rng, (-0.32, -0.18)),
                "temperature": _u(rng, (45.0, 75.0)),
                "cooling_minutes": 20.0,
            }
        )
    faults = []
    if rng.random() < 0.3:
        victim = people[int(rng.integers(0, len(people)))]
        start = victim["enter"] + victim["approach"] + _u(rng, (0.0, max(0.1, victim["dwell"] - 1.0)))
        faults.append(
            {
                "kind": str(rng.choice(["i2c_error", "stuck_frames", "out_of_range"])),
                "start": round(start, 3),
                "duration": _u(rng, (0.5, 3.0)),
            }
        )
    data = {
        "name": name,
        "duration": round(end, 3),
        "loop": False,
        "seed": seed,
        "ambient": {
            "temperature": _u(rng, AMBIENT_RANGE),
            "drift_per_hour": _u(rng, (-1.0, 1.0)),
            "gradient": _u(rng, (0.2, 1.0)),
        },
        "person": people,
        "object": objects,
        "fault": faults,
    }
    return parse_scenario(data, f"<suite session {name}>")


@dataclass(frozen=True)
class SessionPlan:
    name: str
    seed: int
    scenario: Scenario


def plan_suite(split: str, min_people: int = 200) -> list[SessionPlan]:
    plans: list[SessionPlan] = []
    people = 0
    for index, seed in enumerate(session_seeds(split, MAX_SESSIONS_PER_SPLIT)):
        if people >= min_people:
            break
        name = f"{split}_{index:03d}"
        scenario = plan_session(seed, name)
        plans.append(SessionPlan(name, seed, scenario))
        people += len(scenario.people)
    return plans


def record_session(plan: SessionPlan) -> tuple[list[RecordedFrame], float]:
    """Run the session through the fake sensor and the real driver; returns (frames, sensor offset)."""
    scenario = plan.scenario
    clock = ManualClock(0.0)
    scene = ThermalScene(scenario, seed=plan.seed)
    device = FakeAMG8833(scene, clock=clock, seed=plan.seed, faults=scene)
    bus = FakeI2C(devices={ADDRESS_DEFAULT: device})
    driver = AMG8833(bus, clock=clock)
    frames: list[RecordedFrame] = []
    broken = False
    for k in range(1, round(scenario.duration / FRAME_PERIOD_S) + 1):
        clock.now = k * FRAME_PERIOD_S  # set, not accumulated: no drift in float steps
        try:
            if broken:
                driver.reinit()  # what the daemon does after a fault
                broken = False
            pixels = driver.read_frame()
            thermistor = driver.read_thermistor()
        except SensorFault:
            broken = True
            continue
        frames.append(RecordedFrame(round(clock.now, 4), thermistor, pixels))
    return frames, device.offset_c


def _truth(plan: SessionPlan, frames: int, offset: float, recording: str) -> dict[str, Any]:
    scenario = plan.scenario
    ambient = scenario.ambient.temperature
    people = []
    for index, person in enumerate(scenario.people):
        start, end = person.dwell_window
        kinds = sorted({f.kind for f in scenario.faults if f.start < end and f.start + f.duration > start})
        concurrent = any(
            other.enter < end and other.exit > start for j, other in enumerate(scenario.people) if j != index
        )
        people.append(
            {
                "id": f"{plan.name}/{person.name}",
                "enter": person.enter,
                "dwell_start": round(start, 3),
                "dwell_end": round(end, 3),
                "exit": round(person.exit, 3),
                "core_temp": person.core_temp,
                "label": label_for(person.core_temp),
                "distance": person.distance,
                "lateral": person.lateral,
                "forehead_c": round(forehead_temperature(person.core_temp, ambient), 3),
                "canthus_c": round(canthus_temperature(person.core_temp, ambient), 3),
                "fault": bool(kinds),
                "fault_kinds": kinds,
                "concurrent": concurrent,
            }
        )
    return {
        "recording": recording,
        "seed": plan.seed,
        "ambient_c": ambient,
        "sensor_offset_c": round(offset, 4),
        "frames": frames,
        "faults": [f.model_dump() for f in scenario.faults],
        "objects": [o.model_dump() for o in scenario.objects],
        "scenario": scenario.model_dump(by_alias=True),
        "people": people,
    }


def generate_suite(
    out_dir: str | os.PathLike[str], split: str = "test", min_people: int = 200
) -> dict[str, Any]:
    """Write the recordings and ground_truth.json; returns the ground truth."""
    out = Path(out_dir)
    plans = plan_suite(split, min_people)
    sessions = []
    for plan in plans:
        frames, offset = record_session(plan)
        recording = f"recordings/{plan.name}.jsonl"
        write_recording(out / recording, frames)
        sessions.append(_truth(plan, len(frames), offset, recording))
        log.info("suite %s: %d frames, %d people", plan.name, len(frames), len(plan.scenario.people))
    truth = {
        "split": split,
        "seeds": [plan.seed for plan in plans],
        "people": sum(len(s["people"]) for s in sessions),
        "sessions": sessions,
    }
    atomic_write(out / "ground_truth.json", json.dumps(truth, indent=1))
    return truth


def iter_people(truth: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for session in truth["sessions"]:
        yield from session["people"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the screening accuracy suite.")
    parser.add_argument("out_dir")
    parser.add_argument("--split", choices=sorted(SPLIT_SEED_BASE), default="test")
    parser.add_argument("--people", type=int, default=200, help="at least this many people")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    truth = generate_suite(args.out_dir, args.split, args.people)
    print(f"{truth['people']} people in {len(truth['sessions'])} sessions -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
