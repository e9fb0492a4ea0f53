"""The sampling policy: idle rate with the interrupt armed, active rate while someone is there, and back."""

from __future__ import annotations

import math
from collections.abc import Callable

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


# -- static warm objects (fixtures): learned, masked, forgotten -----------------------------------------

FIXTURE_S = 60.0
CORNER = {(0, 0): 45.0, (0, 1): 44.0, (1, 0): 44.5, (1, 1): 43.0}  # a radiator in the top-left corner
FACE = {(r, c): 34.0 for r in range(3, 6) for c in range(3, 5)}


def fixture_policy(**overrides: float) -> SamplingPolicy:
    return policy(fixture_after_s=FIXTURE_S, **overrides)


def noisy(rng: np.random.Generator, frame: np.ndarray, amplitude: float = 0.35) -> np.ndarray:
    """Sensor noise well inside the fixture band, as the 10 fps NETD puts on a steady pixel."""
    return frame + rng.uniform(-amplitude, amplitude, frame.shape)


def play(p: SamplingPolicy, start: float, end: float, frame: Callable[[float], np.ndarray]) -> list[Plan]:
    """Frames from start (inclusive) to end (exclusive), each at the rate the previous plan asked for."""
    plans: list[Plan] = []
    t, fps = start, p.plan(start).fps
    while t < end - 1e-9:
        plan = p.on_frame(t, frame(t))
        plans.append(plan)
        fps = plan.fps
        t = round(t + 1.0 / fps, 6)
    return plans


def with_radiator(p: SamplingPolicy, rng: np.random.Generator) -> float:
    """A radiator warms up in the corner of an empty room and stays; returns when it is learned."""
    p.on_frame(0.0, room())
    plans = play(p, 1.0, 1.0 + FIXTURE_S - 0.5, lambda t: noisy(rng, room(hot=CORNER)))
    assert all(plan.present and plan.fps == 10 for plan in plans)  # unknown warm pixels: presence
    assert p.fixture_count == 0
    play(p, 1.0 + FIXTURE_S - 0.5, 1.0 + FIXTURE_S + 0.5, lambda t: noisy(rng, room(hot=CORNER)))
    assert p.fixture_count == 4
    return 1.0 + FIXTURE_S + 0.5


def test_a_static_warm_corner_goes_back_to_idle_and_stays_there() -> None:
    rng = np.random.default_rng(1)
    p = fixture_policy(idle_after_s=10.0)
    learned = with_radiator(p, rng)
    # Nothing but the fixture: idle_after_s after the last unexplained warm pixel, 1 fps.
    plans = play(p, learned, learned + 9.0, lambda t: noisy(rng, room(hot=CORNER)))
    assert plans[0].fps == 10
    plans = play(p, learned + 11.0, learned + 3600.0, lambda t: noisy(rng, room(hot=CORNER)))
    assert plans and all(plan == Plan(fps=1, interrupt=None, present=False) for plan in plans)
    # The interrupt stays off: the chip compares every pixel with one level, the radiator's included.
    assert p.fixture_count == 4
    assert p.fixture_mask == (1 << 0) | (1 << 1) | (1 << 8) | (1 << 9)  # image order, like the frames


def test_someone_arriving_beside_a_known_fixture_is_seen_on_the_next_frame() -> None:
    rng = np.random.default_rng(2)
    p = fixture_policy(idle_after_s=10.0)
    learned = with_radiator(p, rng)
    t = learned + 20.0
    assert p.on_frame(t, noisy(rng, room(hot=CORNER))).fps == 1
    plan = p.on_frame(t + 1.0, noisy(rng, room(hot=CORNER | FACE)))
    assert plan == Plan(fps=10, interrupt=None, present=True)
    assert p.fixture_count == 4  # the radiator is still known
    # They leave: back to idle after idle_after_s, the radiator still masked.
    plans = play(p, t + 1.1, t + 30.0, lambda t: noisy(rng, room(hot=CORNER)))
    assert plans[-1] == Plan(fps=1, interrupt=None, present=False)


def test_an_interrupt_on_fixture_pixels_only_is_not_presence() -> None:
    rng = np.random.default_rng(3)
    p = fixture_policy(idle_after_s=10.0)
    learned = with_radiator(p, rng)
    t = learned + 20.0
    assert not p.on_interrupt(t, p.fixture_mask).present  # an edge still on its way from before
    assert p.on_interrupt(t + 0.1, p.fixture_mask | (1 << 35)).present


def test_a_fixture_that_cools_away_is_forgotten_and_the_interrupt_comes_back() -> None:
    rng = np.random.default_rng(4)
    p = fixture_policy(idle_after_s=10.0)
    learned = with_radiator(p, rng)
    t = learned + 20.0
    assert p.on_frame(t, noisy(rng, room(hot=CORNER))).interrupt is None
    cooler = {pixel: value - 1.5 for pixel, value in CORNER.items()}  # switched off: cooling
    plan = p.on_frame(t + 1.0, room(hot=cooler))
    assert p.fixture_count == 0  # changed: forgotten at once, and still above the level: presence
    assert plan.present and plan.fps == 10
    plans = play(p, t + 1.1, t + 20.0, lambda t: room())  # cooled down to the room
    assert p.fixture_count == 0
    assert plans[-1].fps == 1 and plans[-1].interrupt is not None
    assert plans[-1].interrupt.upper_c == 25.0


def test_a_fixture_that_warms_further_counts_as_presence_at_once() -> None:
    rng = np.random.default_rng(5)
    p = fixture_policy(idle_after_s=10.0)
    learned = with_radiator(p, rng)
    t = learned + 20.0
    assert p.on_frame(t, noisy(rng, room(hot=CORNER))).fps == 1
    warmer = dict(CORNER)
    warmer[(1, 1)] += 2.0  # something hot set down in front of it, or a hand on it
    plan = p.on_frame(t + 1.0, room(hot=warmer))
    assert plan.present and plan.fps == 10
    assert p.fixture_count == 3


def test_someone_standing_still_past_the_fixture_time_then_the_next_person() -> None:
    rng = np.random.default_rng(6)
    p = fixture_policy(idle_after_s=10.0)
    p.on_frame(0.0, room())
    # A person stands very still: after the fixture time their pixels count as fixtures, and the
    # sampler idles. Screening works on the frames themselves (at whichever rate) and had its answer
    # within seconds; nothing downstream reads the sampler's presence.
    plans = play(p, 1.0, 1.0 + FIXTURE_S + 9.5, lambda t: noisy(rng, room(hot=FACE)))
    assert all(plan.fps == 10 for plan in plans)
    assert p.fixture_count == len(FACE)
    assert play(p, 1.0 + FIXTURE_S + 9.5, 200.0, lambda t: noisy(rng, room(hot=FACE)))[-1].fps == 1
    # Any move of theirs is a change: presence again at once.
    swayed = dict(FACE)
    swayed[(3, 3)] = 31.0
    assert p.on_frame(200.0, room(hot=swayed)).fps == 10
    play(p, 200.1, 230.0, lambda t: noisy(rng, room(hot=FACE)))
    # They leave: their pixels are forgotten at once, the interrupt is armed again.
    p.on_frame(230.0, room())
    assert p.fixture_count == 0
    plans = play(p, 230.1, 260.0, lambda t: room())
    assert p.fixture_count == 0
    assert plans[-1].fps == 1 and plans[-1].interrupt is not None
    # The next person, at the same spot, is someone arriving.
    plan = p.on_frame(260.0, room(hot=FACE))
    assert plan == Plan(fps=10, interrupt=None, present=True)


def test_the_background_follows_the_room_with_a_fixture_in_view() -> None:
    rng = np.random.default_rng(7)
    p = fixture_policy(idle_after_s=5.0)
    learned = with_radiator(p, rng)
    t = learned
    for _ in range(900):  # 15 minutes at 1 fps, the room warming by 2 °C, the radiator as it was
        p.on_frame(t, noisy(rng, room(ROOM + 2.0 * (t - learned) / 900, hot=CORNER), 0.1))
        t += 1.0
    assert p.fixture_count == 4
    assert p.background == pytest.approx(ROOM + 2.0, abs=0.3)


def test_the_fixture_time_must_be_positive() -> None:
    with pytest.raises(ValueError, match="fixture_after_s"):
        policy(fixture_after_s=0.0)
