import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.screening import grid
from appliance.screening.background import NOISE_FLOOR_C
from appliance.screening.blobs import Scene, _bbox, find_blobs
from appliance.screening.settings import ScreeningSettings

from .synth import Head, Spot, render

S = ScreeningSettings()


def scene_of(pixels: np.ndarray, background_c: float = 22.0) -> Scene:
    return find_blobs(pixels, np.full((8, 8), background_c), np.full((8, 8), NOISE_FLOOR_C), S)


def test_an_empty_noisy_scene_has_nobody() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        scene = scene_of(render(noise_sd=0.16, rng=rng, quantise=True))
        assert scene.empty
        assert not scene.objects


def test_one_face_is_one_person_with_its_centroid_on_the_face() -> None:
    scene = scene_of(render([Head(distance_m=0.35, center=(3.0, 4.0), torso_c=None)]))
    assert scene.person is not None and not scene.multiple
    row, col = scene.person.centroid
    # Pixel r spans [r, r+1): the face centre (3.0, 4.0) is at index coordinates (2.5, 3.5).
    assert row == pytest.approx(2.5, abs=0.3)
    assert col == pytest.approx(3.5, abs=0.3)
    assert len(scene.person.hot_c) == S.hot_pixels
    assert list(scene.person.hot_c) == sorted(scene.person.hot_c, reverse=True)


def test_two_faces_side_by_side_are_multiple() -> None:
    heads = [Head(distance_m=0.6, center=(3.0, 1.6)), Head(distance_m=0.6, center=(3.0, 6.4))]
    scene = scene_of(render(heads))
    # Their shoulders touch, so it is one blob holding two faces.
    assert len(scene.people) == 1 and scene.people[0].faces == 2
    assert scene.multiple


def test_a_face_split_by_cold_glasses_is_still_one_face() -> None:
    px = render([Head(distance_m=0.25, center=(3.5, 4.0))])
    px[3, 2:6] = 27.0  # the glasses row, opaque to long-wave infrared
    scene = scene_of(px)
    assert scene.person is not None and not scene.multiple


def test_a_sub_pixel_hot_spot_cannot_be_told_from_a_far_face() -> None:
    # The documented limit: a small cup 70 degC far enough to fill a fraction of a pixel
    # reads like a cool, distant person. It must not be measured, only prompted.
    scene = scene_of(render(spots=[Spot(70.0, (6.0, 2.0), 0.9)]))
    assert scene.person is not None
    assert scene.person.peak_c < S.skin_ref_c


def test_a_small_far_passer_by_does_not_make_it_multiple() -> None:
    heads = [Head(distance_m=0.3, center=(3.5, 3.0)), Head(distance_m=2.5, center=(1.5, 7.3), torso_c=None)]
    scene = scene_of(render(heads))
    assert scene.person is not None
    assert not scene.multiple


def test_a_hot_cup_is_an_object_not_a_person() -> None:
    # A mug of coffee (65 degC, 9 cm across) on the counter 0.4 m away: 1.5 pixels wide.
    scene = scene_of(render(spots=[Spot(65.0, (6.5, 2.5), 1.5)]))
    assert scene.empty
    assert len(scene.objects) == 1
    assert scene.objects[0].peak_c > S.object_min_c


def test_a_cup_beside_a_person_leaves_one_person() -> None:
    head = Head(distance_m=0.35, center=(3.0, 3.0), torso_c=None)
    scene = scene_of(render([head], [Spot(65.0, (6.5, 6.5), 1.5)]))
    assert scene.person is not None
    assert not scene.multiple
    assert len(scene.objects) == 1


def test_a_whole_frame_drift_is_common_mode_not_a_person() -> None:
    scene = scene_of(render(background_c=24.0), background_c=22.0)
    assert scene.offset_c == pytest.approx(2.0)
    assert scene.empty


def test_a_face_off_the_left_edge_is_clipped() -> None:
    scene = scene_of(render([Head(distance_m=0.3, center=(3.0, 0.5))]))
    assert scene.person is not None
    assert scene.person.clipped


def test_the_clothing_below_the_face_does_not_widen_it() -> None:
    with_torso = scene_of(render([Head(distance_m=0.3, center=(2.8, 4.0), torso_c=30.0)])).person
    bare = scene_of(render([Head(distance_m=0.3, center=(2.8, 4.0), torso_c=None)])).person
    assert with_torso is not None and bare is not None
    assert with_torso.width_px == pytest.approx(bare.width_px, rel=0.1)


@given(st.integers(1, (1 << 64) - 1))
def test_the_bounding_box_of_a_bitmask(bits: int) -> None:
    ys, xs = np.nonzero(grid.to_mask(bits))
    assert _bbox(bits) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
