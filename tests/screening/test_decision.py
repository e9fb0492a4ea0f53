import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.screening.decision import ThresholdTrigger, decide, rejection
from appliance.screening.distance import Distance
from appliance.screening.estimator import FrameMeasure, estimate_window, model_estimate
from appliance.screening.settings import ScreeningSettings

S = ScreeningSettings()


def hot_for(estimate_c: float, ambient_c: float = 24.0, distance_m: float = 0.35) -> float:
    """The apparent face temperature the default model turns into ``estimate_c``."""
    rest = model_estimate(0.0, ambient_c, distance_m, S)
    return (estimate_c - rest) / S.model_hot


def window(estimate_c: float = 36.8, n: int = 9, **kw: object) -> list[FrameMeasure]:
    h = hot_for(estimate_c)
    base = FrameMeasure(
        t=0.0, hot_c=(h, h, h, h), ambient_c=24.0, distance=Distance(0.35, 0.05), width_px=3.0,
        centroid=(3.0, 3.5), noise_c=0.17,
    )  # fmt: skip
    return [dataclasses.replace(base, t=i * 0.1, **kw) for i in range(n)]  # type: ignore[arg-type]


def test_normal_below_and_elevated_at_the_threshold() -> None:
    assert decide(estimate_window(window(36.8), S), S).result == "normal"
    assert decide(estimate_window(window(37.95), S), S).result == "normal"
    assert decide(estimate_window(window(38.0), S), S).result == "elevated"
    assert decide(estimate_window(window(39.5), S), S).result == "elevated"


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (window(n=3), "too_few_frames"),
        (window(43.5), "implausible_high"),
        (window(32.0), "implausible_low"),
        (window(ambient_c=45.0), "ambient_out_of_range"),
        (window(distance=Distance(0.9, 0.1)), "distance"),
        (window(distance=Distance(0.35, 0.05, clipped=True)), "distance"),
    ],
)
def test_bad_windows_are_retries_with_a_reason(frames: list[FrameMeasure], reason: str) -> None:
    d = decide(estimate_window(frames, S), S)
    assert (d.result, d.reason) == ("retry", reason)


def test_a_person_who_moved_is_a_retry() -> None:
    frames = window()
    frames[-1] = dataclasses.replace(frames[-1], centroid=(3.0, 4.5))
    assert rejection(estimate_window(frames, S), S) == "moved"


def test_a_fault_anywhere_in_the_window_is_a_retry() -> None:
    frames = window()
    frames[5] = dataclasses.replace(frames[5], fault=True)
    assert decide(estimate_window(frames, S), S).reason == "sensor_fault"


@given(
    estimate=st.floats(30.0, 45.0),
    fault_at=st.integers(0, 8),
    bad=st.sampled_from(["fault", "nan", "hot", "cold", "inf"]),
)
def test_any_window_with_a_fault_or_impossible_value_is_never_normal(estimate: float, fault_at: int,
                                                                     bad: str) -> None:  # fmt: skip
    frames = window(estimate)
    m = frames[fault_at]
    replacement = {
        "fault": dataclasses.replace(m, fault=True),
        "nan": dataclasses.replace(m, hot_c=(math.nan, *m.hot_c[1:])),
        "hot": dataclasses.replace(m, hot_c=(S.pixel_max_c + 1, *m.hot_c[1:])),
        "cold": dataclasses.replace(m, hot_c=(S.pixel_min_c - 1, *m.hot_c[1:])),
        "inf": dataclasses.replace(m, ambient_c=math.inf),
    }[bad]
    frames[fault_at] = replacement
    assert decide(estimate_window(frames, S), S).result != "normal"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_an_estimate_outside_the_plausible_band_is_never_normal(estimate: float) -> None:
    frames = window(36.8)
    h = hot_for(estimate) if math.isfinite(estimate) else estimate
    frames = [dataclasses.replace(m, hot_c=(h, h, h)) for m in frames]
    result = decide(estimate_window(frames, S), S).result
    if not (S.min_plausible_c <= estimate <= S.max_plausible_c):
        assert result == "retry"


@given(st.lists(st.floats(-0.29, 0.29), min_size=1, max_size=50))
def test_hysteresis_never_flips_on_noise_narrower_than_its_band(noise: list[float]) -> None:
    # Elevated, then readings jitter within the band just under the threshold: stays elevated.
    up = ThresholdTrigger(38.0, 0.3, confirm_frames=1)
    up.update(38.5)
    assert up.elevated
    for n in noise:
        assert up.update(38.0 - 0.3 + 0.3 * (n + 0.3) / 0.6 + 1e-9)
    # Normal, readings jitter anywhere below the threshold: stays normal.
    down = ThresholdTrigger(38.0, 0.3, confirm_frames=1)
    for n in noise:
        assert not down.update(37.7 + n)


def test_the_trigger_needs_confirm_frames_and_nan_resets_the_count() -> None:
    t = ThresholdTrigger(38.0, 0.3, confirm_frames=3)
    assert not t.update(38.2)
    assert not t.update(38.2)
    assert not t.update(math.nan)
    assert not t.update(38.2)
    assert not t.update(38.2)
    assert t.update(38.2)
    assert t.update(37.8)  # inside the band: stays up
    for _ in range(2):
        assert t.update(37.6)
    assert not t.update(37.6)


def test_a_window_that_crossed_the_threshold_stays_elevated_inside_the_band() -> None:
    frames = window(38.1)[:2] + window(37.8)[:10]
    w = estimate_window(frames, S)
    assert w.estimate_c is not None and w.estimate_c < S.threshold_c
    assert decide(w, S).result == "elevated"
