"""Rotation and mirroring, pure: on labelled pixels, on I420 planes, and what the ISP can do."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from appliance.camera import transform
from appliance.camera.transform import Orientation

# A 2x3 picture whose pixels name themselves:   a b c
#                                               d e f
PIC = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
a, b, c, d, e, f = 1, 2, 3, 4, 5, 6


@pytest.mark.parametrize(
    "orient, expected",
    [
        (Orientation(), [[a, b, c], [d, e, f]]),
        (Orientation(90), [[d, a], [e, b], [f, c]]),  # clockwise: the left column becomes the top row
        (Orientation(180), [[f, e, d], [c, b, a]]),
        (Orientation(270), [[c, f], [b, e], [a, d]]),
        (Orientation(0, hflip=True), [[c, b, a], [f, e, d]]),
        (Orientation(0, vflip=True), [[d, e, f], [a, b, c]]),
        # Turned first, then the turned picture is mirrored.
        (Orientation(90, hflip=True), [[a, d], [b, e], [c, f]]),
        (Orientation(90, vflip=True), [[f, c], [e, b], [d, a]]),
        (Orientation(180, hflip=True, vflip=True), [[a, b, c], [d, e, f]]),
    ],
)
def test_apply_on_labelled_pixels(orient: Orientation, expected: list[list[int]]) -> None:
    out = transform.apply(PIC, orient)
    assert out.tolist() == expected
    assert out.flags.c_contiguous


def test_apply_keeps_channels_together() -> None:
    rgb = np.stack([PIC, PIC + 10, PIC + 20], axis=2)
    out = transform.apply(rgb, Orientation(90))
    assert out.shape == (3, 2, 3)
    assert out[0, 0].tolist() == [d, d + 10, d + 20]


def test_identity_is_free() -> None:
    assert transform.apply(PIC, Orientation()) is PIC


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_capture_size_gives_the_output_size(rotation: int) -> None:
    orient = Orientation(rotation)  # type: ignore[arg-type]
    w, h = orient.capture_size(640, 480)
    out = transform.apply(np.zeros((h, w), np.uint8), orient)
    assert out.shape == (480, 640)


@pytest.mark.parametrize(
    "rotation, hflip, vflip", list(itertools.product([0, 90, 180, 270], [False, True], [False, True]))
)
def test_sensor_flips_do_the_same_as_software(rotation: int, hflip: bool, vflip: bool) -> None:
    orient = Orientation(rotation, hflip, vflip)  # type: ignore[arg-type]
    flips = transform.sensor_flips(orient)
    if rotation in (90, 270):
        assert flips is None
        return
    assert flips is not None
    in_camera = transform.apply(PIC, Orientation(0, *flips))
    assert in_camera.tolist() == transform.apply(PIC, orient).tolist()


@pytest.mark.parametrize(
    "orient", [Orientation(90), Orientation(270, hflip=True), Orientation(180, vflip=True)]
)
def test_i420_planes_turn_like_the_picture(orient: Orientation) -> None:
    rng = np.random.default_rng(1)
    w, h = 8, 4
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    u = rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8)
    v = rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8)
    frame = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
    out = transform.apply_i420(frame, orient)
    oy, ou, ov = transform.apply(y, orient), transform.apply(u, orient), transform.apply(v, orient)
    out_h, out_w = oy.shape
    assert out.shape == (out_h * 3 // 2, out_w)
    flat = out.ravel()
    assert (flat[: oy.size] == oy.ravel()).all()
    assert (flat[oy.size : oy.size + ou.size] == ou.ravel()).all()
    assert (flat[oy.size + ou.size :] == ov.ravel()).all()


def test_i420_refuses_odd_sizes() -> None:
    for shape in [(9, 5), (7, 6), (4, 4)]:  # odd width, rows that are not 3/2 of an even height
        with pytest.raises(ValueError):
            transform.apply_i420(np.zeros(shape, np.uint8), Orientation(90))


def test_i420_unstride_drops_each_planes_padding() -> None:
    w, h, stride = 6, 4, 8
    y = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    u = np.full((h // 2, w // 2), 200, np.uint8)
    v = np.full((h // 2, w // 2), 100, np.uint8)
    padded = np.zeros(h * stride + 2 * (h // 2) * (stride // 2), np.uint8)
    padded[: h * stride].reshape(h, stride)[:, :w] = y
    c = (h // 2) * (stride // 2)
    padded[h * stride : h * stride + c].reshape(h // 2, stride // 2)[:, : w // 2] = u
    padded[h * stride + c :].reshape(h // 2, stride // 2)[:, : w // 2] = v
    packed = transform.i420_unstride(padded.reshape(h * 3 // 2, stride), w, h)
    expected = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)
    assert (packed == expected).all()


def test_resize_nearest() -> None:
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert transform.resize_nearest(img, 2, 2).tolist() == [[0, 2], [8, 10]]
    assert transform.resize_nearest(img, 4, 4) is img
    assert transform.resize_nearest(np.zeros((4, 4, 3), np.uint8), 8, 2).shape == (2, 8, 3)


@pytest.mark.parametrize(
    "yuv, bgr",
    [
        ((16, 128, 128), (0, 0, 0)),
        ((235, 128, 128), (255, 255, 255)),
        ((82, 90, 240), (0, 0, 255)),  # BT.601 limited-range red
        ((145, 54, 34), (0, 255, 0)),  # green
        ((41, 240, 110), (255, 0, 0)),  # blue
    ],
)
def test_i420_to_bgr(yuv: tuple[int, int, int], bgr: tuple[int, int, int]) -> None:
    w, h = 4, 2
    frame = np.concatenate(
        [np.full(w * h, yuv[0]), np.full(w * h // 4, yuv[1]), np.full(w * h // 4, yuv[2])]
    ).astype(np.uint8)
    out = transform.i420_to_bgr(frame.reshape(h * 3 // 2, w))
    assert out.shape == (h, w, 3)
    assert np.abs(out.astype(int) - np.array(bgr)).max() <= 3
