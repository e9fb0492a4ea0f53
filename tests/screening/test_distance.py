import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.screening.background import NOISE_FLOOR_C
from appliance.screening.blobs import find_blobs
from appliance.screening.distance import estimate_distance
from appliance.screening.settings import ScreeningSettings

from .synth import Head, render, width_px

S = ScreeningSettings()


@pytest.mark.parametrize("distance_m", [0.22, 0.3, 0.4, 0.5])
@pytest.mark.parametrize("center", [(3.0, 4.0), (3.5, 3.5), (2.7, 4.3)])
def test_distance_of_a_synthetic_face_within_the_window(
    distance_m: float, center: tuple[float, float]
) -> None:
    px = render([Head(distance_m=distance_m, center=center)], noise_sd=0.16, rng=np.random.default_rng(7))
    person = find_blobs(px, np.full((8, 8), 22.0), np.full((8, 8), NOISE_FLOOR_C), S).person
    assert person is not None
    d = estimate_distance(person.width_px, S, noise_c=person.noise_c, contrast_c=person.contrast_c)
    assert d.metres == pytest.approx(distance_m, rel=0.12)
    assert abs(d.metres - distance_m) < 2 * d.sd_m


def test_width_converts_exactly_for_a_noise_free_width() -> None:
    d = estimate_distance(width_px(0.4), S)
    assert d.metres == pytest.approx(0.4)


@given(st.floats(0.3, 7.0), st.floats(0.3, 7.0))
def test_wider_is_nearer(a: float, b: float) -> None:
    da, db = estimate_distance(a, S).metres, estimate_distance(b, S).metres
    assert (a < b) == (da > db) or a == b


@given(st.floats(0.1, 8.0), st.floats(0.0, 2.0))
def test_uncertainty_never_below_the_spread_of_face_sizes(width: float, noise: float) -> None:
    d = estimate_distance(width, S, noise_c=noise, contrast_c=10.0)
    assert d.relative_sd >= S.face_size_rel_sd


def test_noise_widens_the_uncertainty_and_clipping_is_kept() -> None:
    quiet = estimate_distance(2.0, S, noise_c=0.1, contrast_c=10.0)
    noisy = estimate_distance(2.0, S, noise_c=2.0, contrast_c=10.0, clipped=True)
    assert noisy.sd_m > quiet.sd_m
    assert noisy.clipped and not quiet.clipped
