import dataclasses

import numpy as np
import pytest

from appliance.screening.estimator import model_estimate
from appliance.screening.fit import Sample, collection_settings, fit
from appliance.screening.settings import ScreeningSettings

S = ScreeningSettings()
TRUE = dataclasses.replace(S, model_hot=1.25, model_hot_per_m=0.6, model_full_cover_m=0.45)


def samples(n: int = 400, seed: int = 0, spoilt: int = 0) -> list[Sample]:
    """Faces drawn from a known model, with a little noise and a few spoilt windows."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        core, room, d = rng.uniform(36.0, 40.0), rng.uniform(18.0, 30.0), rng.uniform(0.3, 0.8)
        thermistor = room + S.thermistor_rise_c
        # Invert the true model for the contrast this person shows, then add noise.
        unit = model_estimate(1.0, thermistor, d, TRUE) - model_estimate(0.0, thermistor, d, TRUE)
        contrast = (core - model_estimate(0.0, thermistor, d, TRUE)) / unit + rng.normal(0.0, 0.05)
        if i < spoilt:
            contrast += 6.0  # a cup under the chin
        out.append(Sample(contrast, thermistor, d, core, f"p{i}", d))
    return out


def test_the_fit_recovers_a_known_model() -> None:
    f = fit(samples(), S)
    assert f.model_hot == pytest.approx(1.25, abs=0.01)
    assert f.model_hot_per_m == pytest.approx(0.6, abs=0.05)
    assert f.model_full_cover_m == pytest.approx(0.45, abs=0.02)
    assert (f.model_ambient, f.model_intercept_c, f.model_distance_c_per_m) == (1.0, 0.0, 0.0)
    assert f.mae_c < 0.1 and f.samples == 400


def test_a_few_spoilt_windows_do_not_move_it() -> None:
    f = fit(samples(spoilt=20), S)
    assert f.model_hot == pytest.approx(1.25, abs=0.02)
    assert f.model_hot_per_m == pytest.approx(0.6, abs=0.1)


def test_the_uncertainty_grows_with_distance_when_the_errors_do() -> None:
    noisy = []
    rng = np.random.default_rng(5)
    for s in samples():
        spread = 0.05 + 0.4 * max(0.0, s.distance_m - 0.45)
        noisy.append(dataclasses.replace(s, contrast_c=s.contrast_c + rng.normal(0.0, spread)))
    f = fit(noisy, S)
    # 0.4 degC of contrast per metre, times the gain (about 1.35 out there), in degC of body.
    assert f.model_sd_per_m == pytest.approx(0.4 * 1.35, rel=0.3)
    assert f.model_sd_c < 0.15


def test_too_few_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        fit(samples(10), S)


def test_collecting_never_rejects_a_window_for_what_the_model_says() -> None:
    c = collection_settings(S)
    assert c.min_confidence == 0.0 and c.calibration_offset_c == 0.0
    assert c.min_plausible_c < 0 and c.refer_margin_sd == c.normal_margin_sd == 0.0
