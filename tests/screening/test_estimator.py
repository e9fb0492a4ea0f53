import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.screening.background import NOISE_FLOOR_C
from appliance.screening.blobs import find_blobs
from appliance.screening.distance import Distance
from appliance.screening.estimator import (
    FrameMeasure,
    calibration_offset,
    estimate_window,
    hot_statistic,
    measure,
    model_estimate,
)
from appliance.screening.settings import ScreeningSettings

from .synth import Head, frame, render

S = ScreeningSettings()


def still(n: int = 9, hot: tuple[float, ...] = (34.0, 34.0, 33.9, 33.8), **kw: object) -> list[FrameMeasure]:
    base = FrameMeasure(
        t=0.0, hot_c=hot, ambient_c=24.0, distance=Distance(0.35, 0.05), width_px=3.0,
        centroid=(3.0, 3.5), noise_c=0.17,
    )  # fmt: skip
    return [dataclasses.replace(base, t=i * 0.1, **kw) for i in range(n)]  # type: ignore[arg-type]


def window_from_frames(face_c: float, distance_m: float = 0.35, seed: int = 0, noise: bool = True) -> float:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(9):
        head = Head(face_c=face_c, distance_m=distance_m)
        px = render([head], noise_sd=0.16 if noise else 0.0, rng=rng, quantise=noise)
        person = find_blobs(px, np.full((8, 8), 22.0), np.full((8, 8), NOISE_FLOOR_C), S).person
        assert person is not None
        out.append(measure(frame(i * 0.1, px), person, S))
    estimate = estimate_window(out, S).estimate_c
    assert estimate is not None
    return estimate


def test_the_model_is_the_documented_linear_form() -> None:
    s = dataclasses.replace(S, model_intercept_c=1.0, model_hot=1.1, model_ambient=-0.2,
                            model_distance_c_per_m=0.5, calibration_offset_c=0.3)  # fmt: skip
    assert model_estimate(34.0, 24.0, 0.4, s) == pytest.approx(1.0 + 1.1 * 34 - 0.2 * 24 + 0.5 * 0.4 + 0.3)
    assert model_estimate(34.0, 24.0, 0.4, s, calibrated=False) == pytest.approx(1.0 + 1.1 * 34 - 4.8 + 0.2)


def test_the_hot_statistic_averages_a_band_below_the_single_pixel_share() -> None:
    assert hot_statistic([34.0, 35.0, 33.0, 36.0], S) == 35.0
    pool = [36.0, 35.0, 34.0, 33.0] * 9
    assert hot_statistic(pool, S) == 35.0  # ranks 21..26 of 36: the second-hottest pixel
    # Quantised noisy readings: the band mean resolves finer than the 0.25 degC step.
    assert hot_statistic([34.0] * 24 + [34.25] * 12, S) == pytest.approx(34.125)


def test_a_steady_window_estimates_the_model_of_its_hot_percentile() -> None:
    w = estimate_window(still(), S)
    assert w.frames == 9 and w.faults == 0
    assert w.hot_c == pytest.approx(34.0)  # the second-hottest pixel
    assert w.hot_c is not None
    assert w.estimate_c == pytest.approx(model_estimate(w.hot_c, 24.0, 0.35, S))
    assert w.std_c == 0.0 and w.drift_px == 0.0
    assert 0.5 < w.confidence.total <= 1.0
    assert len(w.running_c) == 9 and w.running_c[-1] == w.estimate_c


def test_one_hot_defective_pixel_does_not_set_the_estimate() -> None:
    clean = estimate_window(still(), S)
    spiky = still()
    spiky[4] = dataclasses.replace(spiky[4], hot_c=(45.0, 34.0, 33.9, 33.8))
    w = estimate_window(spiky, S)
    assert w.estimate_c is not None and clean.estimate_c is not None
    assert w.estimate_c - clean.estimate_c < 0.2


@given(st.floats(30.0, 90.0), st.lists(st.floats(30.0, 36.0), min_size=3, max_size=3))
def test_a_single_pixel_never_sets_the_estimate_even_when_it_is_hot_in_every_frame(
    stuck: float, others: list[float]
) -> None:
    frames = still(hot=(max(stuck, *others), *others))
    w = estimate_window(frames, S)
    assert w.hot_c is not None
    assert w.hot_c <= max(others) + 1e-9


def test_fault_frames_and_impossible_values_are_counted_not_used() -> None:
    frames = still()
    frames[2] = dataclasses.replace(frames[2], fault=True)
    frames[3] = dataclasses.replace(frames[3], hot_c=(float("nan"), 34.0))
    frames[4] = dataclasses.replace(frames[4], hot_c=(150.0, 34.0))
    w = estimate_window(frames, S)
    assert w.faults == 3
    assert w.frames == 6


def test_an_empty_window_has_no_estimate_and_no_confidence() -> None:
    w = estimate_window([], S)
    assert w.estimate_c is None
    assert w.confidence.total == 0.0


def test_moving_and_flickering_windows_score_lower() -> None:
    steady = estimate_window(still(), S)
    wobbly = [dataclasses.replace(m, hot_c=tuple(v + (0.3 if i % 2 else -0.3) for v in m.hot_c))
              for i, m in enumerate(still())]  # fmt: skip
    w = estimate_window(wobbly, S)
    assert w.std_c > 0.25
    assert w.confidence.total < steady.confidence.total
    far = estimate_window(still(width_px=1.3, distance=Distance(0.8, 0.25)), S)
    assert far.confidence.coverage < 0.5
    assert far.confidence.distance < steady.confidence.distance


@settings(max_examples=30, deadline=None)
@given(st.floats(32.0, 36.5), st.floats(0.01, 1.5), st.sampled_from([0.25, 0.35, 0.45]))
def test_a_hotter_person_at_the_same_geometry_never_reads_lower(face: float, delta: float, d: float) -> None:
    assert window_from_frames(face + delta, d, noise=False) >= window_from_frames(face, d, noise=False)


@settings(max_examples=30, deadline=None)
@given(st.floats(32.0, 36.5), st.floats(0.01, 1.5), st.sampled_from([0.25, 0.35, 0.45]), st.integers(0, 1000))
def test_with_noise_a_hotter_person_never_reads_visibly_lower(face: float, delta: float, d: float,
                                                              seed: int) -> None:  # fmt: skip
    # Same seed, same noise draws. Quantisation can move the distance a millimetre, and
    # with it the estimate by a thousandth of a degree; never by what a display shows.
    assert window_from_frames(face + delta, d, seed) >= window_from_frames(face, d, seed) - 0.01


@given(
    st.lists(st.floats(20.0, 45.0), min_size=4, max_size=6),
    st.floats(0.0, 3.0),
)
def test_raising_every_hot_pixel_never_lowers_the_estimate(hot: list[float], delta: float) -> None:
    a = estimate_window(still(hot=tuple(hot)), S).estimate_c
    b = estimate_window(still(hot=tuple(v + delta for v in hot)), S).estimate_c
    assert a is not None and b is not None
    assert b >= a - 1e-9


def test_body_calibration_makes_the_kiosk_read_the_reference() -> None:
    rng = np.random.default_rng(3)
    bg = render(background_c=22.0)
    frames = [
        frame(i * 0.1, render([Head(face_c=34.0, distance_m=0.35)], noise_sd=0.16, rng=rng))
        for i in range(12)
    ]
    cal = calibration_offset(frames, 37.0, S, background=bg)
    assert cal.frames == 12
    calibrated = dataclasses.replace(S, calibration_offset_c=cal.offset_c)
    measures = []
    for f in frames:
        person = find_blobs(f.pixels, bg, np.full((8, 8), NOISE_FLOOR_C), calibrated).person
        assert person is not None
        measures.append(measure(f, person, calibrated))
    assert estimate_window(measures, calibrated).estimate_c == pytest.approx(37.0, abs=1e-6)


def test_surface_calibration_corrects_the_sensor_reading() -> None:
    # A black body reading 1.5 degC low, large enough to fill pixels, median background.
    frames = []
    for i in range(10):
        px = np.full((8, 8), 22.0)
        px[3:6, 3:6] = 33.5
        frames.append(frame(i * 0.1, px))
    cal = calibration_offset(frames, 35.0, S, reference="surface")
    assert cal.measured_c == pytest.approx(33.5)
    assert cal.offset_c == pytest.approx(S.model_hot * 1.5)


def test_calibration_without_a_target_is_refused() -> None:
    frames = [frame(i * 0.1, np.full((8, 8), 22.0)) for i in range(10)]
    with pytest.raises(ValueError, match="calibration needs"):
        calibration_offset(frames, 37.0, S)
