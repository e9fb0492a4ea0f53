import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.screening.interpolate import interpolation_matrix, upsample, upsample_griddata

from .synth import Head, render


@given(st.floats(-20.0, 100.0))
def test_a_constant_field_stays_constant(value: float) -> None:
    out = upsample(np.full((8, 8), value))
    assert out.shape == (32, 32)
    assert np.allclose(out, value)


def test_every_row_of_the_matrix_sums_to_one() -> None:
    assert np.allclose(interpolation_matrix(8, 32).sum(axis=1), 1.0)


def test_exact_at_the_grid_nodes() -> None:
    # With 29 outputs, every fourth lands on an input pixel: the kernel passes through it.
    rng = np.random.default_rng(0)
    x = rng.normal(30.0, 3.0, (8, 8))
    out = interpolation_matrix(8, 29) @ x @ interpolation_matrix(8, 29).T
    assert np.allclose(out[::4, ::4], x)
    # And at the corners of the 32x32 grid.
    full = upsample(x)
    assert full[0, 0] == pytest.approx(x[0, 0]) and full[-1, -1] == pytest.approx(x[-1, -1])


def test_linear_fields_are_reproduced_by_both() -> None:
    r, c = np.mgrid[0:8, 0:8]
    x = 20.0 + 0.5 * r - 0.25 * c
    rr, cc = np.mgrid[0:7:32j, 0:7:32j]
    expected = 20.0 + 0.5 * rr - 0.25 * cc
    assert np.allclose(upsample(x), expected)
    assert np.allclose(upsample_griddata(x), expected, atol=1e-6)


def test_fast_and_griddata_agree_on_a_face() -> None:
    x = render([Head(distance_m=0.3, center=(3.5, 3.5))])
    fast, ref = upsample(x), upsample_griddata(x)
    inner = (slice(4, 28), slice(4, 28))
    assert np.nanmax(np.abs(fast[inner] - ref[inner])) < 1.5
    assert np.nanmean(np.abs(fast - ref)) < 0.5
    # Not a smoothing filter: the face keeps its peak; a cubic kernel rings a little over it,
    # about as much as the reference does.
    assert x.max() - 0.1 <= fast.max() <= x.max() + 1.5
    assert abs(fast.max() - np.nanmax(ref)) < 1.0
