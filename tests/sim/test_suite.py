from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.sim.scenario import parse_scenario
from appliance.sim.suite import (
    SPLIT_SEED_BASE,
    SessionPlan,
    generate_suite,
    label_for,
    plan_session,
    plan_suite,
    record_session,
    session_seeds,
)
from appliance.thermal.recording import read_recording


def test_test_split_has_200_people_in_the_promised_ranges() -> None:
    plans = plan_suite("test", 200)
    people = [p for plan in plans for p in plan.scenario.people]
    assert len(people) >= 200
    assert all(0.3 <= p.distance <= 0.8 for p in people)
    assert all(18.0 <= plan.scenario.ambient.temperature <= 30.0 for plan in plans)
    cores = [p.core_temp for p in people]
    assert all(36.0 <= c <= 40.0 for c in cores)
    labels = [label_for(c) for c in cores]
    assert labels.count("normal") > 80 and labels.count("fever") > 30 and labels.count("borderline") > 10
    assert min(c for c in cores if c >= 38.0) < 38.5 and max(cores) > 39.5  # fever spans its range
    assert sum(1 for plan in plans if plan.scenario.objects) >= 5  # hot objects
    kinds = {f.kind for plan in plans for f in plan.scenario.faults}
    assert kinds == {"i2c_error", "stuck_frames", "out_of_range"}
    concurrent = 0
    for plan in plans:
        ps = plan.scenario.people
        concurrent += sum(
            1
            for i, a in enumerate(ps)
            for b in ps[i + 1 :]
            if a.dwell_window[0] < b.exit and b.dwell_window[0] < a.exit
        )
    assert concurrent >= 10  # several people at once


def test_train_and_test_seeds_never_meet() -> None:
    train, test = set(session_seeds("train", 5000)), set(session_seeds("test", 5000))
    assert not train & test
    assert plan_suite("train", 20)[0].seed == SPLIT_SEED_BASE["train"]
    with pytest.raises(ValueError):
        session_seeds("validation", 1)


def test_plans_are_seeded() -> None:
    assert plan_session(123, "a") == plan_session(123, "a")
    assert plan_session(123, "a") != plan_session(124, "a")


def test_generated_suite_has_recordings_and_ground_truth(tmp_path: Path) -> None:
    truth = generate_suite(tmp_path, "train", min_people=6)
    on_disk = json.loads((tmp_path / "ground_truth.json").read_text())
    assert on_disk == truth and truth["split"] == "train" and truth["people"] >= 6
    for session in truth["sessions"]:
        frames = list(read_recording(tmp_path / session["recording"]))
        assert len(frames) == session["frames"] > 100
        assert parse_scenario(session["scenario"]).seed == session["seed"]
        for person in session["people"]:
            assert person["label"] == label_for(person["core_temp"])
            assert person["enter"] < person["dwell_start"] < person["dwell_end"] < person["exit"]
            # Someone is in view while they dwell: the frame is warmer than the room somewhere.
            during = [f for f in frames if person["dwell_start"] <= f.t <= person["dwell_end"]]
            if during and not person["fault"]:
                assert max(float(f.pixels.max()) for f in during) > session["ambient_c"] + 4.0


def test_fault_windows_leave_gaps_and_are_marked() -> None:
    scenario = parse_scenario(
        {
            "name": "faulty",
            "duration": 12.0,
            "loop": False,
            "person": [{"name": "p0", "enter": 1.0, "dwell": 6.0, "distance": 0.5}],
            "fault": [{"kind": "i2c_error", "start": 4.0, "duration": 2.0}],
        }
    )
    frames, _ = record_session(SessionPlan("faulty", 7, scenario))
    times = [f.t for f in frames]
    assert not [t for t in times if 4.0 < t < 6.0]
    assert [t for t in times if t < 4.0] and [t for t in times if t > 6.05]  # recovered afterwards
