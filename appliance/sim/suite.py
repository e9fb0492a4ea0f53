"""The screening accuracy suite: seeded sessions of people, recorded through the real driver, with truth.

Each session is a generated scenario (one room, one sensor, 3-5 people, sometimes two at once, sometimes
a hot cup, sometimes a sensor fault) rendered by ThermalScene, sampled by FakeAMG8833 at 10 fps and read
by the AMG8833 driver exactly as the daemon reads it. What the driver refuses (I2C errors, out-of-range
pixels, stuck frames past its limit) is missing from the recording, as it would be on a kiosk.

Prompt compliance (open loop). A real kiosk prompts ("please come closer", "one person at a
time") and people follow, after a moment. The suite scripts that reaction in advance from the
seed; it does not watch what the core actually says (so a person the core answers where they
first stopped still takes their scripted step afterwards: the first answer is what counts).
The script assumes a kiosk that asks "come closer" beyond 0.55 m; the shipped distance window
(config screening.distance_max_m) ends at 0.8 m, so a shipped kiosk measures people at
0.55-0.8 m before their step (`appliance bench screening` reports both windows).
Per person, seeded:
- where they first stop: 0.3-0.8 m (DISTANCE_RANGE), as before;
- compliant or not: NONCOMPLIANT_SHARE (12 %) ignore every prompt; a pair shares one draw;
- a compliant person alone who stops beyond COMFORTABLE_MAX_M (0.55 m) stands there for their
  reaction time (REACTION_RANGE, 1.5-4 s), steps into BAND_RANGE (0.35-0.5 m) and holds still;
- a compliant pair (PAIR_SHARE, as before: the second arrives while the first stands, side by
  side): after their reaction time the second steps back and aside (1.8 m, 1.4 m to the side,
  out of the sensor's 60 degree view) and waits; the first, alone, reacts again (centres, steps
  into the band if beyond 0.55 m), is measured and leaves; then the second comes forward to the
  centre (into the band if they started beyond 0.55 m) and holds still;
- a non-compliant person stays where they stopped for their dwell, and a non-compliant pair
  stays side by side together: they should get no answer, "retry" or a prompt, never a wrong
  "normal".
behaviour="fixed" draws the same people but nobody follows prompts (the suite before prompt
compliance): everyone stands where they stopped and pairs stay together. Scoring
(screening/evaluate.py): the headline figures are over compliant people, a compliant person with
no answer counting as a miss in sensitivity; the non-compliant are scored on their own.

Two splits with disjoint seeds: fit the estimator on "train", measure it on "test", never the reverse.

    python -m appliance.sim.suite OUT_DIR --split test --people 200 [--behaviour fixed]

writes OUT_DIR/recordings/<split>_<NNN>.jsonl and OUT_DIR/ground_truth.json:

    {"split": "test", "behaviour": "compliant", "seeds": [...], "people": N, "sessions": [
        {"recording": "recordings/test_000.jsonl", "seed": 900000, "ambient_c": 24.1, "sensor_offset_c": 0.4,
         "frames": 312, "faults": [{"kind": "i2c_error", "start": 12.0, "duration": 1.5}],
         "scenario": {... the scenario, reloadable with parse_scenario ...},
         "people": [{"id": "test_000/p0", "enter": 1.0, "arrive": 2.5, "dwell_start": 6.1, "dwell_end": 10.0,
                     "exit": 12.0, "core_temp": 38.4, "label": "fever",
                     "start_distance": 0.72, "distance": 0.41, "lateral": 0.05,
                     "compliant": true, "behaviour": "steps_closer", "prompted": true, "reaction_s": 2.4,
                     "track": [[t, distance, lateral], ...],
                     "forehead_c": ..., "canthus_c": ..., "fault": false, "fault_kinds": [],
                     "concurrent": false}, ...]}]}

arrive: when they first stopped; dwell_start: when they hold still where they are to be measured
(after any step; equal to arrive if they did not move); distance/lateral: that position (for the
non-compliant, where they stopped); start_distance: where they first stopped; behaviour: stays |
steps_closer | first_of_pair | yields | ignores_distance | ignores_pair | fixed; prompted: their
first stop calls for a prompt (beyond 0.55 m, or in a pair); track: waypoints of their position
(the scenario eases between them), from which the scorer takes the distance they were measured at;
concurrent: someone else in the sensor's view while they hold still to be measured.

Labels by core temperature: normal < 37.3 <= borderline < 38.0 <= fever. A person whose dwell
(arrive to dwell_end) overlaps a fault should get "no reading", not a guess.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from appliance.atomic import atomic_write
from appliance.errors import SensorFault
from appliance.sim.scenario import HEAD_WIDTH_M, Person, Scenario, parse_scenario
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
DISTANCE_RANGE = (0.3, 0.8)  # where people first stop
AMBIENT_RANGE = (18.0, 30.0)
HOLD_RANGE = (3.0, 7.0)  # s holding still where they are measured

# Prompt compliance (see the docstring). Open loop: reactions are scripted, not driven by the core.
BEHAVIOURS = ("compliant", "fixed")
PAIR_SHARE = 0.3  # chance that a person alone is joined by a second one
COMFORTABLE_MAX_M = 0.55  # beyond this, "please come closer"
BAND_RANGE = (0.35, 0.5)  # where a person who steps closer ends up
REACTION_RANGE = (1.5, 4.0)  # s from a prompt to the first step
STEP_RANGE = (0.6, 1.2)  # s for a step closer
WALK_RANGE = (1.5, 2.5)  # s for walking aside and back in (about 1.5 m)
NONCOMPLIANT_SHARE = 0.12  # people (pairs: both) who ignore every prompt
WAIT_DISTANCE_M = 1.8  # where the second of a pair waits: back and aside, out of the sensor's view
WAIT_LATERAL_M = 1.4
SENSOR_HALF_FOV_TAN = math.tan(math.radians(30.0))


class NumpyNoise:
    """The fake sensor's and the scene's random numbers from numpy's Generator, as they were drawn
    before those modules dropped numpy: the corpus (and every number measured on it) stays the same
    for a seed. The daemon's sim uses the standard library's generator instead (fake_amg8833.PyNoise)."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def normal(self, loc: float, scale: float) -> float:
        return float(self._rng.normal(loc, scale))

    def sample(self, population: int, k: int) -> list[int]:
        return [int(i) for i in self._rng.choice(population, size=k, replace=False)]


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


def _draw_person(rng: np.random.Generator) -> dict[str, Any]:
    """Everything about one person, drawn in a fixed order whatever they end up doing, so the
    "fixed" behaviour and the "compliant" one have the same people."""
    category = rng.choice(["normal", "borderline", "fever"], p=[0.55, 0.15, 0.30])
    core = _u(rng, {"normal": NORMAL_RANGE, "borderline": BORDERLINE_RANGE, "fever": FEVER_RANGE}[category])
    return {
        "core_temp": core,
        "approach": _u(rng, (1.0, 2.5)),
        "hold": _u(rng, HOLD_RANGE),
        "leave": _u(rng, (1.0, 2.0)),
        "lateral": _u(rng, (-0.12, 0.12)),
        "distance": _u(rng, DISTANCE_RANGE),
        "face_height": _u(rng, (-0.12, 0.12)),
        "sway": _u(rng, (0.0, 0.02)),
        "compliant": bool(rng.random() >= NONCOMPLIANT_SHARE),
        "reaction": _u(rng, REACTION_RANGE),
        "band": _u(rng, BAND_RANGE),
        "step": _u(rng, STEP_RANGE),
        "walk": _u(rng, WALK_RANGE),
        "pair_offset": _u(rng, (0.0, 1.5)),
        "pair_jitter": _u(rng, (-0.04, 0.04)),
        "return_gap": _u(rng, (0.5, 1.5)),
        "gap": _u(rng, (0.5, 2.0)),
    }


def _person(
    d: dict[str, Any], name: str, enter: float, lateral: float, dwell: float, moves: list[Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "enter": round(enter, 3),
        "approach": d["approach"],
        "dwell": round(dwell, 3),
        "leave": d["leave"],
        "distance": d["distance"],
        "lateral": round(lateral, 3),
        "face_height": d["face_height"],
        "core_temp": d["core_temp"],
        "sway": d["sway"],
        "move": moves,
    }


def _meta(d: dict[str, Any], compliant: bool, behaviour: str, prompted: bool) -> dict[str, Any]:
    return {
        "compliant": compliant,
        "behaviour": behaviour,
        "prompted": prompted,
        "reaction_s": d["reaction"] if compliant and prompted else None,
        "start_distance": d["distance"],
    }


def _single(
    d: dict[str, Any], name: str, t: float, follows: bool | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One person alone. follows: True/False (compliant/not), None for the fixed behaviour."""
    far = d["distance"] > COMFORTABLE_MAX_M
    if far and follows:
        # "Please come closer": after their reaction time they step into the measurable band.
        move = {"after": d["reaction"], "duration": d["step"], "distance": d["band"]}
        person = _person(d, name, t, d["lateral"], d["reaction"] + d["step"] + d["hold"], [move])
        return person, _meta(d, True, "steps_closer", True)
    behaviour = "fixed" if follows is None else ("ignores_distance" if far else "stays")
    return _person(d, name, t, d["lateral"], d["hold"], []), _meta(d, bool(follows), behaviour, far)


def _pair(
    a: dict[str, Any], b: dict[str, Any], names: tuple[str, str], t: float, follows: bool | None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Two at once: b arrives while a stands, on the other side. "One person at a time": a
    compliant pair separates (b steps back and aside, out of view, until a has left)."""
    side = -1.0 if a["lateral"] <= 0 else 1.0
    a_lat, b_lat = 0.25 * side, -0.25 * side + b["pair_jitter"]
    a_arrive = t + a["approach"]
    b_enter = a_arrive + a["pair_offset"]
    if not follows:
        behaviour = "fixed" if follows is None else "ignores_pair"
        return [
            (_person(a, names[0], t, a_lat, a["hold"], []), _meta(a, bool(follows), behaviour, True)),
            (_person(b, names[1], b_enter, b_lat, b["hold"], []), _meta(b, bool(follows), behaviour, True)),
        ]
    b_arrive = b_enter + b["approach"]
    # b yields: after their reaction time, back and aside to where the sensor cannot see them.
    b_moves: list[dict[str, Any]] = [
        {
            "after": b["reaction"],
            "duration": b["walk"],
            "distance": WAIT_DISTANCE_M,
            "lateral": WAIT_LATERAL_M * (-side),
        }
    ]
    b_clear = b_arrive + b["reaction"] + b["walk"]
    # a, alone now, reacts to the next prompt: centres and, if beyond the comfortable
    # distance, steps into the band.
    a_to = a["band"] if a["distance"] > COMFORTABLE_MAX_M else a["distance"]
    a_after = b_clear - a_arrive + a["reaction"]
    a_move = {"after": round(a_after, 3), "duration": a["step"], "distance": a_to, "lateral": a["lateral"]}
    a_dwell = a_after + a["step"] + a["hold"]
    a_exit = a_arrive + a_dwell + a["leave"]
    # b comes forward once a has gone, to the centre, into the band if they started beyond it.
    b_to = b["band"] if b["distance"] > COMFORTABLE_MAX_M else b["distance"]
    b_after = a_exit + b["return_gap"] - b_arrive
    b_moves.append(
        {"after": round(b_after, 3), "duration": b["walk"], "distance": b_to, "lateral": b["lateral"]}
    )
    b_dwell = b_after + b["walk"] + b["hold"]
    return [
        (_person(a, names[0], t, a_lat, a_dwell, [a_move]), _meta(a, True, "first_of_pair", True)),
        (_person(b, names[1], b_enter, b_lat, b_dwell, b_moves), _meta(b, True, "yields", True)),
    ]


def plan_session_with_meta(
    seed: int, name: str, behaviour: str = "compliant"
) -> tuple[Scenario, dict[str, dict[str, Any]]]:
    """A random but seeded session and, per person name, their compliance (see the docstring)."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {behaviour!r}")
    rng = np.random.default_rng(seed)
    count = int(rng.integers(3, 6))
    draws = [_draw_person(rng) for _ in range(count)]
    pair_after = [False] * count
    for i in range(count - 1):
        pair_after[i] = not (i > 0 and pair_after[i - 1]) and rng.random() < PAIR_SHARE
    people: list[dict[str, Any]] = []
    meta: dict[str, dict[str, Any]] = {}
    t = 1.0
    i = 0
    while i < count:
        d = draws[i]
        follows = None if behaviour == "fixed" else d["compliant"]
        if pair_after[i]:
            # A pair shares one disposition: they arrived together and both hear the prompt.
            group = _pair(d, draws[i + 1], (f"p{i}", f"p{i + 1}"), t, follows)
            i += 2
        else:
            group = [_single(d, f"p{i}", t, follows)]
            i += 1
        for person, info in group:
            people.append(person)
            meta[person["name"]] = info
        t = max(p["enter"] + p["approach"] + p["dwell"] + p["leave"] for p in people) + d["gap"]
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
    return parse_scenario(data, f"<suite session {name}>"), meta


def plan_session(seed: int, name: str, behaviour: str = "compliant") -> Scenario:
    """A random but seeded session: the same seed always gives the same scenario."""
    return plan_session_with_meta(seed, name, behaviour)[0]


@dataclass(frozen=True)
class SessionPlan:
    name: str
    seed: int
    scenario: Scenario
    # Per person name: compliant, behaviour, prompted, reaction_s, start_distance.
    people_meta: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan_suite(split: str, min_people: int = 200, behaviour: str = "compliant") -> list[SessionPlan]:
    plans: list[SessionPlan] = []
    people = 0
    for index, seed in enumerate(session_seeds(split, MAX_SESSIONS_PER_SPLIT)):
        if people >= min_people:
            break
        name = f"{split}_{index:03d}"
        scenario, meta = plan_session_with_meta(seed, name, behaviour)
        plans.append(SessionPlan(name, seed, scenario, meta))
        people += len(scenario.people)
    return plans


def record_session(plan: SessionPlan) -> tuple[list[RecordedFrame], float]:
    """Run the session through the fake sensor and the real driver; returns (frames, sensor offset)."""
    scenario = plan.scenario
    clock = ManualClock(0.0)
    scene = ThermalScene(scenario, noise=NumpyNoise(plan.seed))
    device = FakeAMG8833(scene, clock=clock, noise=NumpyNoise(plan.seed), faults=scene)
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
        grid = np.asarray(pixels, dtype=np.float32).reshape(8, 8)  # the driver's 64 values, row-major
        frames.append(RecordedFrame(round(clock.now, 4), thermistor, grid))
    return frames, device.offset_c


def in_view(distance: float, lateral: float) -> bool:
    """Whether any of a person's head is inside the sensor's 60 degree view."""
    return abs(lateral) - HEAD_WIDTH_M / 2 < distance * SENSOR_HALF_FOV_TAN


def _track(person: Person) -> list[list[float]]:
    """[t, distance, lateral] waypoints (the scenario eases between them; linear is close enough)."""
    arrive, dwell_end = person.dwell_window
    points = [[person.enter, person.far_distance, person.lateral], [arrive, person.distance, person.lateral]]
    for move in person.moves:
        for t in (arrive + move.after, arrive + move.after + move.duration):
            distance, lateral, _ = person.pose_at(t - 1e-9 if t == arrive + move.after else t)
            points.append([t, distance, lateral])
    final = [person.final_distance, person.final_lateral]
    points += [[dwell_end, *final], [person.exit, person.far_distance, final[1]]]
    return [[round(v, 3) for v in point] for point in points]


def _someone_else_in_view(scenario: Scenario, index: int, start: float, end: float) -> bool:
    for k in range(max(1, math.ceil((end - start) / FRAME_PERIOD_S))):
        t = start + k * FRAME_PERIOD_S
        if any(s.index != index and in_view(s.distance, s.lateral) for s in scenario.people_at(t)):
            return True
    return False


def _truth(plan: SessionPlan, frames: int, offset: float, recording: str) -> dict[str, Any]:
    scenario = plan.scenario
    ambient = scenario.ambient.temperature
    people = []
    for index, person in enumerate(scenario.people):
        arrive, end = person.dwell_window
        settled = person.settled_at
        kinds = sorted({f.kind for f in scenario.faults if f.start < end and f.start + f.duration > arrive})
        meta = plan.people_meta.get(person.name, {})
        people.append(
            {
                "id": f"{plan.name}/{person.name}",
                "enter": person.enter,
                "arrive": round(arrive, 3),
                "dwell_start": round(settled, 3),
                "dwell_end": round(end, 3),
                "exit": round(person.exit, 3),
                "core_temp": person.core_temp,
                "label": label_for(person.core_temp),
                "start_distance": meta.get("start_distance", person.distance),
                "distance": round(person.final_distance, 3),
                "lateral": round(person.final_lateral, 3),
                "compliant": meta.get("compliant", True),
                "behaviour": meta.get("behaviour", "scripted"),
                "prompted": meta.get("prompted", False),
                "reaction_s": meta.get("reaction_s"),
                "track": _track(person),
                "forehead_c": round(forehead_temperature(person.core_temp, ambient), 3),
                "canthus_c": round(canthus_temperature(person.core_temp, ambient), 3),
                "fault": bool(kinds),
                "fault_kinds": kinds,
                "concurrent": _someone_else_in_view(scenario, index, settled, end),
            }
        )
    return {
        "recording": recording,
        "seed": plan.seed,
        "ambient_c": ambient,
        "sensor_offset_c": round(offset, 4),
        "frames": frames,
        "faults": msgspec.to_builtins(scenario.faults),
        "objects": msgspec.to_builtins(scenario.objects),
        "scenario": msgspec.to_builtins(scenario),  # the file's key names: parse_scenario reloads it
        "people": people,
    }


def generate_suite(
    out_dir: str | os.PathLike[str], split: str = "test", min_people: int = 200, behaviour: str = "compliant"
) -> dict[str, Any]:
    """Write the recordings and ground_truth.json; returns the ground truth."""
    out = Path(out_dir)
    plans = plan_suite(split, min_people, behaviour)
    sessions = []
    for plan in plans:
        frames, offset = record_session(plan)
        recording = f"recordings/{plan.name}.jsonl"
        write_recording(out / recording, frames)
        sessions.append(_truth(plan, len(frames), offset, recording))
        log.info("suite %s: %d frames, %d people", plan.name, len(frames), len(plan.scenario.people))
    truth = {
        "split": split,
        "behaviour": behaviour,
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
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="compliant")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    truth = generate_suite(args.out_dir, args.split, args.people, args.behaviour)
    print(f"{truth['people']} people in {len(truth['sessions'])} sessions -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
