"""The sampling policy: idle rate with the interrupt armed, active rate while someone is there, and back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.thermal.sampler import LEVEL_STEP_C, LOWER_LEVEL_C, Plan, SamplingPolicy, quantize_level

ROOM = 22.0


def policy(**overrides: float) -> SamplingPolicy:
    options: dict[str, float] = {
        "idle_fps": 1,
        "active_fps": 10,
        "idle_after_s": 10.0,
        "presence_delta_c": 3.0,
    }
    options.update(overrides)
    return SamplingPolicy(**options)  # type: ignore[arg-type]


def room(temperature: float = ROOM, *, hot: dict[tuple[int, int], float] | None = None) -> np.ndarray:
    """A quiet room with a little texture, plus some pixels set to given temperatures."""
    frame = temperature + np.linspace(-0.3, 0.3, 64).reshape(8, 8)
    for (row, col), value in (hot or {}).items():
        frame[row, col] = value
    return frame


def test_idle_with_interrupt_armed_above_the_background() -> None:
    p = policy()
    assert p.plan(0.0) == Plan(fps=1, interrupt=None, present=False)  # no background, nothing to arm
    plan = p.on_frame(0.0, room())
    assert plan.fps == 1 and not plan.present
    assert plan.interrupt is not None
    assert p.background == pytest.approx(ROOM)
    assert plan.interrupt.upper_c == 25.0  # median 22.0 + 3.0, on the chip's 0.25 °C grid
    assert plan.interrupt.lower_c == LOWER_LEVEL_C
    assert 0 < plan.interrupt.hysteresis_c <= 1.0


def test_presence_switches_to_active_and_back_after_idle_after_s() -> None:
    p = policy(idle_after_s=10.0)
    p.on_frame(0.0, room())
    plan = p.on_frame(1.0, room(hot={(2, 3): 34.0}))
    assert plan == Plan(fps=10, interrupt=None, present=True)  # the interrupt is off while active
    for k in range(1, 150):  # the person leaves at once; frames keep coming at 10 fps
        t = 1.0 + k * 0.1
        plan = p.on_frame(t, room())
        assert plan.fps == (10 if t < 11.0 - 1e-9 else 1), t
    assert plan.interrupt is not None and not plan.present


def test_a_person_who_stays_keeps_it_active() -> None:
    p = policy(idle_after_s=2.0)
    p.on_frame(0.0, room())
    last = 0.0
    for k in range(1, 300):
        last = k * 0.1
        plan = p.on_frame(last, room(hot={(1, 1): 33.0, (1, 2): 34.0}))
        assert plan.fps == 10
    assert p.plan(last + 1.99).fps == 10
    assert p.plan(last + 2.0).fps == 1  # time passing without frames ends it too


def test_interrupt_wakes_it_and_an_empty_mask_does_not() -> None:
    p = policy(idle_after_s=5.0)
    p.on_frame(0.0, room())
    assert p.on_interrupt(0.5, 0).fps == 1  # a spurious edge with nothing latched
    plan = p.on_interrupt(0.7, 1 << 27)
    assert plan.present and plan.fps == 10 and plan.interrupt is None
    assert p.plan(5.69).fps == 10
    assert p.plan(5.7).fps == 1


def test_a_pixel_exactly_at_the_level_is_not_presence() -> None:
    # The chip fires on "above the upper level"; the frame check must agree with it.
    p = policy()
    p.on_frame(0.0, np.full((8, 8), ROOM))
    assert not p.on_frame(1.0, room(temperature=ROOM, hot={(0, 0): ROOM + 3.0})).present
    assert p.on_frame(2.0, room(temperature=ROOM, hot={(0, 0): ROOM + 3.25})).present


def test_background_follows_slow_drift_but_not_people() -> None:
    p = policy(idle_after_s=1.0)
    t = 0.0
    for _ in range(600):  # ten minutes at 1 fps, the room warming by 2 °C
        p.on_frame(t, room(ROOM + 2.0 * t / 600))
        t += 1.0
    assert p.background == pytest.approx(ROOM + 2.0, abs=0.3)  # lags by ~tau x slope = 0.2 °C
    before = p.background
    for _ in range(300):  # someone at the kiosk for 30 s: not learned
        p.on_frame(t, room(ROOM + 2.0, hot={(r, c): 34.0 for r in range(2, 6) for c in range(2, 6)}))
        t += 0.1
    assert p.background == before


def test_a_high_start_falls_quickly() -> None:
    # Started with someone filling the view: the first median is body heat, not the room.
    p = policy(idle_after_s=1.0)
    p.on_frame(0.0, np.full((8, 8), 30.0))
    assert p.background == 30.0
    t = 0.0
    for _ in range(25):  # they step away; the room reads 22 °C
        t += 1.0
        p.on_frame(t, room())
    assert p.background == pytest.approx(ROOM, abs=0.1)
    plan = p.plan(t)
    assert plan.interrupt is not None and plan.interrupt.upper_c == 25.0


def test_levels_move_in_steps_not_on_every_frame() -> None:
    p = policy(background_tau_s=1.0)  # a fast background, to move it within a short test
    first = p.on_frame(0.0, room())
    assert first.interrupt is not None
    levels = [first.interrupt]
    t = 0.0
    for temperature in np.arange(ROOM, ROOM + 2.0, 0.02):
        t += 1.0
        interrupt = p.on_frame(t, room(float(temperature))).interrupt
        assert interrupt is not None
        assert interrupt.upper_c == quantize_level(interrupt.upper_c)  # on the 0.25 °C grid
        if interrupt != levels[-1]:
            assert abs(interrupt.upper_c - levels[-1].upper_c) >= LEVEL_STEP_C
            levels.append(interrupt)
    assert 3 <= len(levels) <= 5  # 2 °C of drift in 0.5 °C steps, not a write per frame


def test_same_rate_idle_and_active() -> None:
    p = policy(idle_fps=10)
    p.on_frame(0.0, room())
    assert p.on_frame(0.1, room(hot={(0, 0): 40.0})).fps == 10
    assert p.plan(100.0).fps == 10


@pytest.mark.parametrize(
    "options",
    [
        {"idle_fps": 0},
        {"idle_fps": 10, "active_fps": 1},
        {"idle_after_s": 0.0},
        {"presence_delta_c": -1.0},
        {"presence_delta_c": math.nan},
        {"background_tau_s": 0.0},
    ],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        policy(**options)


def test_bad_input_is_refused() -> None:
    p = policy()
    p.on_frame(5.0, room())
    with pytest.raises(ValueError, match="backwards"):
        p.on_frame(4.0, room())
    with pytest.raises(ValueError, match="64 pixels"):
        p.on_frame(6.0, np.zeros((8, 7)))
    bad = room()
    bad[3, 3] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        p.on_frame(6.0, bad)
    with pytest.raises(ValueError, match="finite"):
        p.plan(math.inf)


# -- property: against a reference model of "present = something seen within idle_after_s" -------------

events = st.lists(
    st.tuples(
        st.floats(0.0, 3.0),  # time since the previous event
        st.sampled_from(["quiet", "hot", "interrupt", "spurious", "tick"]),
        st.integers(1, 12),  # hot pixels in a hot frame: always a minority, as a person near the edge
        st.integers(0, 2**32),  # noise seed
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    events=events,
    room_c=st.floats(15.0, 32.0),
    delta=st.floats(2.0, 6.0),
    idle_after=st.floats(0.5, 20.0),
    idle_fps=st.sampled_from([1, 10]),
)
def test_policy_matches_the_reference_model(
    events: list[tuple[float, str, int, int]], room_c: float, delta: float, idle_after: float, idle_fps: int
) -> None:
    p = SamplingPolicy(idle_fps=idle_fps, active_fps=10, idle_after_s=idle_after, presence_delta_c=delta)
    t = 0.0
    last_presence: float | None = None
    seen_frame = False
    for dt, kind, hot_count, seed in events:
        t += dt
        rng = np.random.default_rng(seed)
        # Quiet pixels stay within ±0.4 °C of the room, so with delta >= 2 a quiet frame can never look
        # like presence and a hot frame (delta + 5 above) always does, whatever the background learned.
        frame = room_c + rng.uniform(-0.4, 0.4, 64)
        if kind == "quiet":
            plan = p.on_frame(t, frame)
            seen_frame = True
        elif kind == "hot":
            frame[rng.choice(64, hot_count, replace=False)] = room_c + delta + 5.0
            plan = p.on_frame(t, frame)
            seen_frame = True
            last_presence = t
        elif kind == "interrupt":
            plan = p.on_interrupt(t, int(rng.integers(1, 2**63)))
            last_presence = t
        elif kind == "spurious":
            plan = p.on_interrupt(t, 0)
        else:
            plan = p.plan(t)
        present = last_presence is not None and t - last_presence < idle_after
        assert plan.present == present
        assert plan.fps == (10 if present else idle_fps)
        assert (plan.interrupt is None) == (present or not seen_frame)
        if seen_frame:
            background = p.background
            assert background is not None and abs(background - room_c) <= 0.4 + 1e-9
        if plan.interrupt is not None:
            assert background is not None
            assert plan.interrupt.upper_c == quantize_level(plan.interrupt.upper_c)
            assert abs(plan.interrupt.upper_c - (background + delta)) <= LEVEL_STEP_C + 0.125
            assert plan.interrupt.lower_c == LOWER_LEVEL_C
