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
    face_contrast,
    face_gain,
    measure,
    model_estimate,
    uncertainty,
)
from appliance.screening.settings import ScreeningSettings

from .synth import Head, frame, measures, render

S = ScreeningSettings()


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


def test_the_model_is_the_documented_form() -> None:
    s = dataclasses.replace(S, model_intercept_c=1.0, model_hot=1.1, model_hot_per_m=0.5,
                            model_full_cover_m=0.4, model_ambient=0.9, model_distance_c_per_m=0.2,
                            thermistor_rise_c=0.5, calibration_offset_c=0.3)  # fmt: skip
    near = 1.0 + 0.9 * (24.0 - 0.5) + 1.1 * 10.0 + 0.2 * 0.35
    assert model_estimate(10.0, 24.0, 0.35, s) == pytest.approx(near + 0.3)
    assert model_estimate(10.0, 24.0, 0.35, s, calibrated=False) == pytest.approx(near)
    # Beyond the full-cover distance the gain grows: the best pixel is partly background.
    assert face_gain(0.6, s) == pytest.approx(1.1 + 0.5 * 0.2)
    far = 1.0 + 0.9 * 23.5 + (1.1 + 0.5 * 0.2) * 10.0 + 0.2 * 0.6
    assert model_estimate(10.0, 24.0, 0.6, s, calibrated=False) == pytest.approx(far)


def test_the_uncertainty_grows_beyond_the_full_cover_distance() -> None:
    assert uncertainty(0.3, S) == uncertainty(S.model_full_cover_m, S) == S.model_sd_c
    assert uncertainty(0.8, S) > uncertainty(0.6, S) > S.model_sd_c


def test_the_face_contrast_is_the_best_pixel_of_the_mean_image() -> None:
    frames = measures([10.0, 10.4, 9.6, 10.0])
    contrast, running, peak = face_contrast(frames)
    assert peak == (3, 3)
    assert contrast == pytest.approx(10.0)
    assert running == pytest.approx((10.0, 10.2, 10.0, 10.0))


def test_averaging_first_keeps_pixel_noise_out_of_the_maximum() -> None:
    # Four pixels of a fully covered face, each noisy: the largest single reading is biased
    # high, the largest of the means hardly.
    rng = np.random.default_rng(1)
    frames = []
    for m in measures(10.0, n=9):
        image = m.contrast.copy()
        image[2:5, 2:6] = 10.0 + rng.normal(0.0, 0.18, (3, 4))
        frames.append(dataclasses.replace(m, contrast=image))
    contrast, _, _ = face_contrast(frames)
    per_frame_max = np.mean([m.contrast[m.region].max() for m in frames])
    assert abs(contrast - 10.0) < per_frame_max - 10.0


def test_a_steady_window_estimates_the_model_of_its_contrast() -> None:
    w = estimate_window(measures(10.0), S)
    assert w.frames == 9 and w.faults == 0
    assert w.contrast_c == pytest.approx(10.0)
    assert w.estimate_c == pytest.approx(model_estimate(10.0, 24.0, 0.35, S))
    assert w.std_c == 0.0 and w.drift_px == 0.0
    assert 0.5 < w.confidence.total <= 1.0
    assert len(w.running_c) == 9 and w.running_c[-1] == w.estimate_c
    assert w.uncertainty_c == pytest.approx(S.model_sd_c)


def test_one_glitching_frame_moves_the_estimate_by_a_ninth_of_its_glitch() -> None:
    clean = estimate_window(measures(10.0), S)
    spiky = measures([10.0] * 4 + [19.0] + [10.0] * 4)
    w = estimate_window(spiky, S)
    assert w.estimate_c is not None and clean.estimate_c is not None
    assert w.estimate_c - clean.estimate_c == pytest.approx(face_gain(0.35, S) * 1.0, abs=1e-9)


def test_fault_frames_and_impossible_values_are_counted_not_used() -> None:
    frames = measures(10.0)
    frames[2] = dataclasses.replace(frames[2], fault=True)
    frames[3] = dataclasses.replace(frames[3], hot_c=(float("nan"), 34.0))
    frames[4] = dataclasses.replace(frames[4], hot_c=(150.0, 34.0))
    frames[5] = dataclasses.replace(frames[5], contrast=np.full((8, 8), np.nan))
    w = estimate_window(frames, S)
    assert w.faults == 4
    assert w.frames == 5


def test_an_empty_window_has_no_estimate_and_no_confidence() -> None:
    w = estimate_window([], S)
    assert w.estimate_c is None
    assert w.confidence.total == 0.0


def test_moving_and_flickering_windows_score_lower() -> None:
    steady = estimate_window(measures(10.0), S)
    w = estimate_window(measures([10.3 if i % 2 else 9.7 for i in range(9)]), S)
    assert w.std_c > 0.25
    assert w.confidence.total < steady.confidence.total
    far = estimate_window(measures(10.0, width_px=1.3, distance_m=0.8, distance_sd_m=0.25), S)
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
    # Same seed, same noise draws. A slightly hotter face can push a pixel over one of the
    # sensor's 0.25 °C steps, which moves the distance the blob gives and with it the estimate:
    # by up to 0.017 °C in 1,800 random draws (this test's 0.01 failed CI once: face 35.906,
    # delta 0.012, 0.45 m, seed 167 read 0.0116 lower). Never by a display step (0.1 °C).
    assert window_from_frames(face + delta, d, seed) >= window_from_frames(face, d, seed) - 0.03


@given(
    st.lists(st.floats(0.5, 20.0), min_size=9, max_size=9),
    st.floats(0.0, 3.0),
    st.sampled_from([0.35, 0.6, 0.8]),
)
def test_raising_the_face_contrast_never_lowers_the_estimate(contrasts: list[float], delta: float,
                                                             d: float) -> None:  # fmt: skip
    a = estimate_window(measures(contrasts, distance_m=d), S).estimate_c
    b = estimate_window(measures([c + delta for c in contrasts], distance_m=d), S).estimate_c
    assert a is not None and b is not None
    assert b >= a - 1e-9


def test_the_sensor_offset_cancels_against_the_background() -> None:
    # The same face on a sensor reading 2 degC high everywhere: the same estimate.
    rng = np.random.default_rng(4)
    px = render([Head(face_c=34.0, distance_m=0.35)], noise_sd=0.16, rng=rng, quantise=True)
    bg = np.full((8, 8), 22.0)
    sd = np.full((8, 8), NOISE_FLOOR_C)
    a = measure(frame(0.0, px), find_blobs(px, bg, sd, S).person, S)  # type: ignore[arg-type]
    b = measure(frame(0.0, px + 2.0), find_blobs(px + 2.0, bg + 2.0, sd, S).person, S)  # type: ignore[arg-type]
    wa, wb = estimate_window([a] * 9, S), estimate_window([b] * 9, S)
    assert wa.estimate_c == pytest.approx(wb.estimate_c)


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
    found: list[FrameMeasure] = []
    for f in frames:
        person = find_blobs(f.pixels, bg, np.full((8, 8), NOISE_FLOOR_C), calibrated).person
        assert person is not None
        found.append(measure(f, person, calibrated))
    assert estimate_window(found, calibrated).estimate_c == pytest.approx(37.0, abs=1e-6)


def test_surface_calibration_corrects_the_room_reference() -> None:
    # A black body at 35.0 degC fills pixels in a room the sensor sees at 22.0 (median
    # background): its contrast says the room is 22.0. The thermistor reads 23.0, which the
    # settings take for a room of 22.5: the kiosk reads the surface 0.5 degC high.
    frames = []
    for i in range(10):
        px = np.full((8, 8), 22.0)
        px[3:6, 3:6] = 35.0
        frames.append(frame(i * 0.1, px, thermistor_c=23.0))
    cal = calibration_offset(frames, 35.0, S, reference="surface")
    assert cal.measured_c == pytest.approx(35.5)
    assert cal.offset_c == pytest.approx(S.model_ambient * -0.5)


def test_calibration_without_a_target_is_refused() -> None:
    frames = [frame(i * 0.1, np.full((8, 8), 22.0)) for i in range(10)]
    with pytest.raises(ValueError, match="calibration needs"):
        calibration_offset(frames, 37.0, S)


def test_distance_of_a_measure_comes_from_the_blob() -> None:
    px = render([Head(face_c=34.0, distance_m=0.4)])
    person = find_blobs(px, np.full((8, 8), 22.0), np.full((8, 8), NOISE_FLOOR_C), S).person
    assert person is not None
    m = measure(frame(0.0, px), person, S)
    assert isinstance(m.distance, Distance)
    assert m.distance.metres == pytest.approx(0.4, rel=0.15)
    assert m.contrast.shape == (8, 8) and m.region.any()
