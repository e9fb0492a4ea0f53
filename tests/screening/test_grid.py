import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from appliance.screening import grid

masks = st.integers(0, (1 << 64) - 1).map(grid.to_mask)
EIGHT = np.ones((3, 3), dtype=bool)
FOUR = ndimage.generate_binary_structure(2, 1)


@given(st.integers(0, (1 << 64) - 1))
def test_bits_and_masks_round_trip_pixel_r_c_is_bit_8r_plus_c(bits: int) -> None:
    mask = grid.to_mask(bits)
    assert grid.to_bits(mask) == bits
    assert all(mask[r, c] == bool(bits >> (8 * r + c) & 1) for r in range(8) for c in range(8))


@settings(max_examples=300)
@given(masks)
def test_dilation_equals_ndimage(mask: np.ndarray) -> None:
    bits = grid.to_bits(mask)
    assert np.array_equal(grid.to_mask(grid.dilate8(bits)), ndimage.binary_dilation(mask, structure=EIGHT))
    assert np.array_equal(grid.to_mask(grid.dilate4(bits)), ndimage.binary_dilation(mask, structure=FOUR))


@settings(max_examples=300)
@given(masks, st.booleans())
def test_components_equal_ndimage_labels_in_order(mask: np.ndarray, eight: bool) -> None:
    labels, n = ndimage.label(mask, structure=EIGHT if eight else FOUR)
    found = [grid.to_mask(c) for c in grid.components(grid.to_bits(mask), eight=eight)]
    assert len(found) == n
    for k, component in enumerate(found, start=1):
        assert np.array_equal(component, labels == k)


@given(masks, st.integers(0, 7), st.integers(0, 7))
def test_component_of_a_pixel(mask: np.ndarray, r: int, c: int) -> None:
    labels, _ = ndimage.label(mask, structure=FOUR)
    part = grid.to_mask(grid.component_of(grid.to_bits(mask), (r, c), eight=False))
    expected = labels == labels[r, c] if mask[r, c] else np.zeros((8, 8), dtype=bool)
    assert np.array_equal(part, expected)
    assert grid.count(grid.to_bits(part)) == int(part.sum())


def test_nothing_wraps_around_the_edges() -> None:
    corner = np.zeros((8, 8), dtype=bool)
    corner[0, 7] = True
    grown = grid.to_mask(grid.dilate8(grid.to_bits(corner)))
    assert grown.sum() == 4 and not grown[1, 0] and not grown[0, 0]
