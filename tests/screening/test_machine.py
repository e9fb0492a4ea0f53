import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.screening.machine import ScreeningMachine
from appliance.screening.records import FrameInput, ScreeningResult, Step
from appliance.screening.settings import ScreeningSettings

from .synth import THERMISTOR_C, Clock, Head, Spot, empty, frame, render, visit

S = ScreeningSettings()
READY = max(S.sensor_warmup_s, S.system_warmup_s)


def run(machine: ScreeningMachine, frames: object) -> tuple[list[Step], list[ScreeningResult]]:
    steps = [machine.feed(f) for f in frames]  # type: ignore[attr-defined]
    return steps, [s.result for s in steps if s.result is not None]


def warm(machine: ScreeningMachine, clock: Clock, rng: np.random.Generator) -> None:
    steps, results = run(machine, empty(clock, READY + 1, rng=rng))
    assert steps[0].state.state == "warming-up"
    assert steps[-1].state.state == "idle"
    assert not results


def names(steps: list[Step]) -> list[str]:
    out: list[str] = []
    for s in steps:
        if not out or out[-1] != s.state.state:
            out.append(s.state.state)
    return out


def test_a_normal_person_is_screened_once_about_a_second_after_stepping_up() -> None:
    rng, clock, m = np.random.default_rng(1), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    arrived = clock.t
    steps, results = run(m, visit(clock, 3.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng))
    assert [r.result for r in results] == ["normal"]
    r = results[0]
    assert r.start_t == arrived
    assert r.estimate_c is not None and 35.5 < r.estimate_c < 37.8
    assert r.distance_m is not None and abs(r.distance_m - 0.35) < 0.05
    assert r.ambient_c == THERMISTOR_C
    # Simulated time, not wall time: still detection plus the window is about a second.
    assert r.end_t - arrived < 1.5
    assert names(steps) == ["hold-still", "measuring", "result"]
    measuring = [s.state.progress for s in steps if s.state.state == "measuring"]
    assert measuring == sorted(measuring) and measuring[0] >= 0.0 and measuring[-1] < 1.0


def test_a_feverish_person_is_elevated_and_the_result_is_held() -> None:
    rng, clock, m = np.random.default_rng(2), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps, results = run(m, visit(clock, 3.0, [Head(face_c=35.6, distance_m=0.3)], rng=rng))
    assert [r.result for r in results] == ["elevated"]
    shown = [s.state for s in steps if s.state.state == "result"]
    assert shown[0].prompt == "result_elevated"
    assert shown[0].estimate_c == results[0].estimate_c


def test_a_person_who_stays_gets_one_result_and_the_next_person_gets_theirs() -> None:
    rng, clock, m = np.random.default_rng(3), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps, results = run(m, visit(clock, 10.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng))
    assert len(results) == 1
    assert steps[-1].state.state == "result"
    assert steps[-1].state.prompt == "move_on"
    _, gone = run(m, empty(clock, 1.0, rng=rng))
    assert not gone
    _, second = run(m, visit(clock, 3.0, [Head(face_c=35.6, distance_m=0.3)], rng=rng))
    assert [r.result for r in second] == ["elevated"]


def test_nobody_is_screened_during_warm_up() -> None:
    rng, clock, m = np.random.default_rng(4), Clock(), ScreeningMachine(S)
    steps, results = run(m, visit(clock, READY - 1.0, [Head(distance_m=0.35)], rng=rng))
    assert not results
    assert {s.state.state for s in steps} == {"warming-up"}
    progress = [s.state.progress for s in steps]
    assert progress == sorted(progress) and progress[-1] < 1.0


def test_a_fault_mid_measurement_forces_fault_gives_a_retry_and_warms_up_again() -> None:
    rng, clock, m = np.random.default_rng(5), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps, results = run(m, visit(clock, 0.8, [Head(distance_m=0.35)], rng=rng, fault_at={5}))
    assert steps[5].state.state == "fault"
    assert [(r.result, r.reason, r.estimate_c) for r in results] == [("retry", "sensor_fault", None)]
    assert steps[-1].state.state == "warming-up"
    steps, results = run(m, visit(clock, S.fault_settle_s - 0.3, [Head(distance_m=0.35)], rng=rng))
    assert {s.state.state for s in steps} == {"warming-up"}
    # One visit, one answer: the person who got the retry is not measured again until they leave.
    steps, results = run(m, visit(clock, 3.0, [Head(distance_m=0.35)], rng=rng))
    assert not results and steps[-1].state.state == "result"
    _, results = run(m, [*empty(clock, 1.0, rng=rng), *visit(clock, 3.0, [Head(distance_m=0.35)], rng=rng)])
    assert [r.result for r in results] == ["normal"]


def test_impossible_pixels_are_a_fault_even_without_the_flag() -> None:
    rng, clock, m = np.random.default_rng(6), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    bad = render()
    bad[0, 0] = float("nan")
    assert m.feed(frame(clock.tick(), bad)).state.state == "fault"
    worse = render()
    worse[3, 3] = 500.0
    assert m.feed(frame(clock.tick(), worse)).state.state == "fault"
    assert m.feed(FrameInput(clock.tick(), np.zeros((4, 4)), 24.0)).state.state == "fault"


def test_two_people_are_told_one_at_a_time_and_not_screened() -> None:
    rng, clock, m = np.random.default_rng(7), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    heads = [Head(distance_m=0.6, center=(3.0, 1.6)), Head(distance_m=0.6, center=(3.0, 6.4))]
    steps, results = run(m, visit(clock, 3.0, heads, rng=rng))
    assert not results
    assert {s.state.state for s in steps} == {"multiple"}
    assert steps[-1].state.prompt == "one_at_a_time"


def test_distance_prompts() -> None:
    rng, clock, m = np.random.default_rng(8), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps, results = run(m, visit(clock, 1.0, [Head(distance_m=0.9, center=(3.5, 3.5))], rng=rng))
    assert steps[-1].state.state == "too-far" and steps[-1].state.prompt == "come_closer"
    steps, _ = run(m, visit(clock, 1.0, [Head(distance_m=0.15, center=(3.3, 4.0))], rng=rng))
    assert steps[-1].state.state == "too-close" and steps[-1].state.prompt == "step_back"
    steps, _ = run(m, visit(clock, 1.0, [Head(distance_m=0.35, center=(3.0, 0.4))], rng=rng))
    assert steps[-1].state.state == "approaching"
    assert not results


def test_a_hot_cup_alone_is_not_a_person() -> None:
    rng, clock, m = np.random.default_rng(9), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps, results = run(m, visit(clock, 3.0, [], rng=rng, spots=[Spot(65.0, (6.5, 2.5), 1.5)]))
    assert not results
    assert {s.state.state for s in steps} == {"idle"}


def test_a_person_who_keeps_moving_is_asked_to_hold_still_and_gets_no_result() -> None:
    rng, clock, m = np.random.default_rng(10), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps: list[Step] = []
    for i in range(30):
        col = 3.0 + 1.5 * np.sin(i * 0.9)
        px = render([Head(distance_m=0.35, center=(3.0, col))], noise_sd=0.16, rng=rng, quantise=True)
        steps.append(m.feed(frame(clock.tick(), px)))
    assert not [s for s in steps if s.result]
    assert "hold-still" in {s.state.state for s in steps}


def test_frames_that_do_not_move_time_forward_are_ignored() -> None:
    rng, clock, m = np.random.default_rng(11), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    before = m.feed(frame(clock.tick(), render()))
    again = m.feed(frame(before.state.t, render([Head(distance_m=0.35)])))
    assert again is before


def test_a_scene_that_stops_changing_is_learned_as_background() -> None:
    s = dataclasses.replace(S, absorb_after_s=5.0)
    rng, clock, m = np.random.default_rng(12), Clock(), ScreeningMachine(s)
    warm(m, clock, rng)
    # A heater switched on at the edge: person-sized, never moving.
    steps, results = run(m, visit(clock, 8.0, [], rng=rng, spots=[Spot(33.0, (4.0, 7.0), 2.5)]))
    assert steps[0].state.state != "idle"
    assert steps[-1].state.state == "idle"
    assert not results


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(33.0, 36.5), st.floats(0.25, 0.45))
def test_no_normal_result_ever_comes_from_a_window_with_a_fault(seed: int, face: float, d: float) -> None:
    rng, clock, m = np.random.default_rng(seed), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    index = int(rng.integers(2, 12))
    fault_t = clock.t + index / clock.fps
    steps, results = run(m, visit(clock, 1.2, [Head(face_c=face, distance_m=d)], rng=rng, fault_at={index}))
    assert any(s.state.state == "fault" for s in steps)
    # Only a window that closed before the fault may be normal; the fault's own is a retry.
    assert all(r.result != "normal" or r.end_t < fault_t for r in results)
    assert all(r.reason == "sensor_fault" for r in results if r.end_t >= fault_t)


def test_a_sub_pixel_warm_spot_is_prompted_never_measured() -> None:
    rng, clock, m = np.random.default_rng(13), Clock(), ScreeningMachine(S)
    warm(m, clock, rng)
    steps, results = run(m, visit(clock, 3.0, [], rng=rng, spots=[Spot(70.0, (6.0, 2.0), 0.9)]))
    assert not results
    assert {s.state.state for s in steps} == {"too-far"}


def test_a_person_standing_there_at_boot_is_screened_once_warm_up_ends() -> None:
    rng, clock, m = np.random.default_rng(14), Clock(), ScreeningMachine(S)
    _, results = run(m, visit(clock, READY + 3.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng))
    assert [r.result for r in results] == ["normal"]
    assert results[0].end_t >= READY
    # The warm start kept the face out of the background it learned.
    assert float(m.background.mean.max()) < 25.0


# --- warm start, faults that come as gaps, the second of two, objects -------------------------


def test_a_warm_start_only_waits_for_the_background() -> None:
    rng, clock, m = np.random.default_rng(20), Clock(), ScreeningMachine(S, warm_start=True)
    steps, results = run(
        m, [*empty(clock, 1.5, rng=rng), *visit(clock, 3.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng)]
    )
    assert [s.state.state for s in steps[: S.background_min_frames]] == [
        "warming-up"
    ] * S.background_min_frames
    assert [r.result for r in results] == ["normal"]


def measuring() -> tuple[np.random.Generator, Clock, ScreeningMachine, list[Head]]:
    """A warm machine half a second into measuring someone."""
    rng, clock, m = np.random.default_rng(21), Clock(), ScreeningMachine(S, warm_start=True)
    run(m, empty(clock, 1.5, rng=rng))
    head = [Head(face_c=34.0, distance_m=0.35)]
    steps, _ = run(m, visit(clock, 0.5, head, rng=rng))
    assert steps[-1].state.state == "measuring"
    return rng, clock, m, head


def test_frames_missing_while_measuring_are_a_fault_and_a_retry() -> None:
    rng, clock, m, head = measuring()
    clock.t += 1.0  # the driver refused a second of frames
    steps, results = run(m, visit(clock, 0.3, head, rng=rng))
    assert steps[0].state.state == "fault"
    assert [(r.result, r.reason) for r in results] == [("retry", "sensor_fault")]


def test_frames_withheld_on_purpose_are_no_fault_and_no_window_spans_them() -> None:
    # The daemon hands frames to a calibration instead of the machine, then says so.
    rng, clock, m, head = measuring()
    m.frames_withheld()
    clock.t += 2.0
    resumed = clock.t
    steps, results = run(m, visit(clock, 2.5, head, rng=rng))
    assert "fault" not in {s.state.state for s in steps}
    assert steps[0].state.state == "hold-still"  # measuring starts again after the hole
    assert [r.result for r in results] == ["normal"]
    assert results[0].end_t - resumed >= S.window_s


def test_a_slow_idle_sensor_is_not_a_fault() -> None:
    # At the idle rate (1 fps) frames are a second apart; so is the first frame of a visit.
    rng, clock, m = np.random.default_rng(22), Clock(fps=1.0), ScreeningMachine(S, warm_start=True)
    steps, _ = run(m, empty(clock, 12.0, rng=rng))
    assert steps[-1].state.state == "idle"
    m.feed(next(visit(clock, 1.0, [Head(face_c=34.0, distance_m=0.35)], rng=rng)))
    clock.fps = 10.0
    steps, results = run(m, visit(clock, 2.5, [Head(face_c=34.0, distance_m=0.35)], rng=rng))
    assert "fault" not in {s.state.state for s in steps}
    assert [r.result for r in results] == ["normal"]


def test_a_frame_repeated_bit_for_bit_while_screening_is_a_stuck_sensor() -> None:
    rng, clock, m = np.random.default_rng(23), Clock(), ScreeningMachine(S, warm_start=True)
    run(m, empty(clock, 1.5, rng=rng))
    steps, _ = run(m, visit(clock, 0.5, [Head(face_c=34.0, distance_m=0.35)], rng=rng))
    stuck = steps[-1].state.t
    last = render([Head(face_c=34.0, distance_m=0.35)], noise_sd=0.16, rng=rng, quantise=True)
    assert m.feed(frame(clock.tick(), last)).state.state != "fault"
    step = m.feed(frame(clock.tick(), last.copy()))
    assert step.state.state == "fault" and stuck < step.state.t
    assert step.result is not None and step.result.reason == "sensor_fault"


def test_the_second_of_two_who_came_together_is_screened_once_the_first_has_gone() -> None:
    rng, clock, m = np.random.default_rng(24), Clock(), ScreeningMachine(S, warm_start=True)
    first, second = (
        Head(face_c=34.0, distance_m=0.45, center=(3.0, 2.0)),
        Head(face_c=35.8, distance_m=0.45, center=(3.0, 6.2)),
    )
    run(m, empty(clock, 1.5, rng=rng))
    _, results = run(m, visit(clock, 2.0, [first], rng=rng))
    assert [r.result for r in results] == ["normal"]
    steps, results = run(m, visit(clock, 1.5, [first, second], rng=rng))
    assert not results and steps[-1].state.state == "result"  # the first is still there
    left = clock.t
    steps, results = run(m, visit(clock, 3.0, [second], rng=rng))
    assert [r.result for r in results] == ["elevated"]
    assert results[0].start_t >= left + S.leave_s
    # ...and the second, standing on, gets no second answer.
    _, again = run(m, visit(clock, 4.0, [second], rng=rng))
    assert not again


def test_a_cup_seen_before_the_person_came_does_not_set_their_temperature() -> None:
    head = Head(face_c=34.0, distance_m=0.35, center=(2.6, 3.6))
    cup = Spot(70.0, (6.2, 5.6), 1.0)
    estimates = []
    for spots in ([], [cup]):
        rng, clock, m = np.random.default_rng(25), Clock(), ScreeningMachine(S, warm_start=True)
        run(m, empty(clock, 2.0, rng=rng) if not spots else visit(clock, 2.0, [], rng=rng, spots=spots))
        _, results = run(m, visit(clock, 3.0, [head], rng=rng, spots=spots))
        assert [r.result for r in results] == ["normal"]
        estimates.append(results[0].estimate_c)
    assert estimates[1] == pytest.approx(estimates[0], abs=0.2)


def test_a_face_cut_by_the_edge_is_measured_only_when_it_must_fill_pixels() -> None:
    rng, clock, m = np.random.default_rng(26), Clock(), ScreeningMachine(S, warm_start=True)
    run(m, empty(clock, 1.5, rng=rng))
    # Close, half off the image: the visible part alone shows it fills whole pixels.
    _, results = run(m, visit(clock, 3.0, [Head(face_c=34.0, distance_m=0.3, center=(3.0, 1.2))], rng=rng))
    assert [r.result for r in results] == ["normal"]
    run(m, empty(clock, 1.0, rng=rng))
    # Farther and cut: its width, hence its distance, is only a bound.
    steps, results = run(
        m, visit(clock, 2.0, [Head(face_c=34.0, distance_m=0.7, center=(3.0, 0.2))], rng=rng)
    )
    assert not results and steps[-1].state.state in ("approaching", "too-far")
