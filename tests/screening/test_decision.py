import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.screening.decision import ThresholdTrigger, decide, rejection
from appliance.screening.distance import Distance
from appliance.screening.estimator import FrameMeasure, estimate_window, uncertainty
from appliance.screening.settings import ScreeningSettings

from .synth import contrast_for, measures

S = ScreeningSettings()


def window(estimate_c: float = 36.8, n: int = 9, **kw: object) -> list[FrameMeasure]:
    frames = measures(contrast_for(estimate_c, S), n)
    return [dataclasses.replace(m, **kw) for m in frames]  # type: ignore[arg-type]


def test_normal_well_below_and_elevated_at_the_threshold() -> None:
    assert decide(estimate_window(window(36.8), S), S).result == "normal"
    assert decide(estimate_window(window(38.0), S), S).result == "elevated"
    assert decide(estimate_window(window(39.5), S), S).result == "elevated"


def test_doubt_near_the_threshold_is_referred_or_retried_never_normal() -> None:
    banded = dataclasses.replace(S, refer_margin_sd=0.5, normal_margin_sd=2.0)
    doubt = uncertainty(0.35, banded)
    refer = banded.threshold_c - banded.refer_margin_sd * doubt
    normal = banded.threshold_c - banded.normal_margin_sd * doubt
    assert normal < refer < banded.threshold_c
    assert decide(estimate_window(window(refer + 0.01), banded), banded).result == "elevated"
    middle = decide(estimate_window(window((refer + normal) / 2), banded), banded)
    assert (middle.result, middle.reason) == ("retry", "uncertain")
    assert decide(estimate_window(window(normal - 0.01), banded), banded).result == "normal"
    # The shipped margins refer the doubtful and have no retry band.
    doubt = uncertainty(0.35, S)
    assert (
        decide(estimate_window(window(S.threshold_c - 0.9 * S.refer_margin_sd * doubt), S), S).result
        == "elevated"
    )
    assert (
        decide(estimate_window(window(S.threshold_c - 1.1 * S.refer_margin_sd * doubt), S), S).result
        == "normal"
    )
    # Without margins the threshold alone decides.
    plain = dataclasses.replace(S, refer_margin_sd=0.0, normal_margin_sd=0.0)
    assert decide(estimate_window(window(37.95), plain), plain).result == "normal"


def far_window(estimate_c: float, distance_m: float = 0.75) -> list[FrameMeasure]:
    c = contrast_for(estimate_c, S, distance_m=distance_m)
    out = []
    for m in window():
        image = m.contrast * c / m.contrast.max()
        out.append(dataclasses.replace(m, distance=Distance(distance_m, 0.1), width_px=1.5, contrast=image))
    return out


def test_a_far_face_needs_a_wider_margin_to_be_called_normal() -> None:
    # A site that widened the window to 0.8 m: far faces are measured, with a wider margin.
    wide = dataclasses.replace(S, distance_max_m=0.8)
    assert estimate_window(far_window(37.6), wide).estimate_c == pytest.approx(37.6, abs=1e-6)
    # The same reading: normal near, referred far, where the model's errors are larger.
    assert decide(estimate_window(window(37.6), wide), wide).result == "normal"
    assert decide(estimate_window(far_window(37.6), wide), wide).result == "elevated"
    # With a retry band, a far reading well below the threshold still is not "normal".
    banded = dataclasses.replace(wide, normal_margin_sd=2.0)
    assert decide(estimate_window(window(37.3), banded), banded).result == "normal"
    assert decide(estimate_window(far_window(37.3), banded), banded).result == "retry"
    # With the default window the far face is not measured at all.
    assert decide(estimate_window(far_window(37.6), S), S).reason == "distance"


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (window(n=3), "too_few_frames"),
        (window(43.5), "implausible_high"),
        (window(32.0), "implausible_low"),
        (window(ambient_c=45.0), "ambient_out_of_range"),
        (window(distance=Distance(0.9, 0.1)), "distance"),
        (window(distance=Distance(0.6, 0.05, clipped=True)), "distance"),
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
    bad=st.sampled_from(["fault", "nan", "hot", "cold", "inf", "nan-image"]),
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
        "nan-image": dataclasses.replace(m, contrast=np.full((8, 8), math.nan)),
    }[bad]
    frames[fault_at] = replacement
    assert decide(estimate_window(frames, S), S).result != "normal"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_an_estimate_outside_the_plausible_band_is_never_normal(estimate: float) -> None:
    c = contrast_for(estimate, S) if math.isfinite(estimate) else estimate
    frames = (
        measures(c)
        if math.isfinite(c)
        else [dataclasses.replace(m, contrast=np.full((8, 8), c)) for m in window()]
    )
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
