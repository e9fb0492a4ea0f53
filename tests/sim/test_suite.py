from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from appliance.sim.scenario import parse_scenario
from appliance.sim.suite import (
    BAND_RANGE,
    COMFORTABLE_MAX_M,
    HOLD_RANGE,
    REACTION_RANGE,
    SPLIT_SEED_BASE,
    SessionPlan,
    generate_suite,
    in_view,
    label_for,
    plan_session,
    plan_session_with_meta,
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


# --- prompt compliance ---------------------------------------------------------------------


def _people_with(behaviour: str, plans: list[SessionPlan]) -> list[tuple[SessionPlan, int]]:
    return [
        (plan, i)
        for plan in plans
        for i, p in enumerate(plan.scenario.people)
        if plan.people_meta[p.name]["behaviour"] == behaviour
    ]


@pytest.fixture(scope="module")
def plans() -> list[SessionPlan]:
    return plan_suite("test", 200)


def _pose(plan: SessionPlan, index: int, t: float) -> tuple[float, float] | None:
    for state in plan.scenario.people_at(t):
        if state.index == index:
            return state.distance, state.lateral
    return None


def test_a_far_person_steps_into_the_band_after_their_reaction_delay(plans: list[SessionPlan]) -> None:
    movers = _people_with("steps_closer", plans)
    assert len(movers) >= 20
    for plan, i in movers:
        p = plan.scenario.people[i]
        meta = plan.people_meta[p.name]
        arrive, end = p.dwell_window
        assert p.distance > COMFORTABLE_MAX_M and meta["start_distance"] == p.distance and meta["compliant"]
        assert REACTION_RANGE[0] <= meta["reaction_s"] <= REACTION_RANGE[1]
        before = _pose(plan, i, arrive + meta["reaction_s"] - 0.05)
        after = _pose(plan, i, p.settled_at + 0.05)
        assert before is not None and after is not None
        assert before[0] == pytest.approx(p.distance)  # still where they stopped until they react
        assert BAND_RANGE[0] <= after[0] <= BAND_RANGE[1] and after[0] == p.final_distance
        assert p.settled_at < end - HOLD_RANGE[0] + 1e-6  # then holds still there


def test_a_pair_separates_and_the_second_comes_back_after_the_first_has_left(
    plans: list[SessionPlan],
) -> None:
    pairs = 0
    for plan in plans:
        people = plan.scenario.people
        for i, b in enumerate(people):
            if plan.people_meta[b.name]["behaviour"] != "yields":
                continue
            a = people[i - 1]
            assert plan.people_meta[a.name]["behaviour"] == "first_of_pair"
            pairs += 1
            b_arrive = b.dwell_window[0]
            assert b_arrive < a.dwell_window[1]  # they did stand there together
            waiting = b_arrive + b.moves[0].after + b.moves[0].duration + 0.05
            pose = _pose(plan, i, waiting)
            assert pose is not None and not in_view(*pose)  # stepped out of the sensor's view
            assert b.moves[1].after + b_arrive > a.exit  # comes forward once the first has gone
            back = _pose(plan, i, b.settled_at + 0.05)
            assert back is not None and in_view(*back) and back[0] <= COMFORTABLE_MAX_M
            # While the first is settled, nobody else is in view.
            for t in np.arange(a.settled_at, a.dwell_window[1], 0.25):
                others = [s for s in plan.scenario.people_at(t) if s.index != i - 1]
                assert not [s for s in others if in_view(s.distance, s.lateral)]
    assert pairs >= 10


def test_noncompliant_people_stay_where_they_are(plans: list[SessionPlan]) -> None:
    ignorers = _people_with("ignores_distance", plans) + _people_with("ignores_pair", plans)
    assert ignorers
    for plan, i in ignorers:
        p = plan.scenario.people[i]
        assert not plan.people_meta[p.name]["compliant"] and not p.moves
        arrive, end = p.dwell_window
        for t in np.arange(arrive, end, 0.5):
            pose = _pose(plan, i, t)
            assert pose is not None and pose[0] == pytest.approx(p.distance)
    share = sum(not m["compliant"] for plan in plan_suite("train", 1000) for m in plan.people_meta.values())
    assert 0.08 < share / 1000 < 0.18  # about NONCOMPLIANT_SHARE


def test_fixed_behaviour_has_the_same_people_standing_still() -> None:
    compliant, _ = plan_session_with_meta(900_003, "s")
    fixed, fixed_meta = plan_session_with_meta(900_003, "s", "fixed")
    assert [p.core_temp for p in compliant.people] == [p.core_temp for p in fixed.people]
    assert [p.distance for p in compliant.people] == [p.distance for p in fixed.people]
    assert not any(p.moves for p in fixed.people)
    assert {m["behaviour"] for m in fixed_meta.values()} == {"fixed"}
    with pytest.raises(ValueError):
        plan_session_with_meta(1, "s", "obedient")


def test_ground_truth_records_compliance_and_where_people_were_measured(tmp_path: Path) -> None:
    truth = generate_suite(tmp_path, "test", min_people=12)
    people = [p for s in truth["sessions"] for p in s["people"]]
    assert truth["behaviour"] == "compliant"
    for p in people:
        assert {"start_distance", "distance", "compliant", "behaviour", "prompted", "track", "arrive"} <= set(
            p
        )
        assert p["arrive"] <= p["dwell_start"] < p["dwell_end"]
        if p["behaviour"] == "steps_closer":
            assert p["start_distance"] > COMFORTABLE_MAX_M and BAND_RANGE[0] <= p["distance"] <= BAND_RANGE[1]
        if not p["compliant"]:
            assert p["distance"] == p["start_distance"]
