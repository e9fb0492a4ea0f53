"""The latency stamp: exact round trip in pixels, and through a real H.264 encode and decode."""

from __future__ import annotations

import av
import numpy as np
import pytest

from appliance.camera import stamp
from appliance.camera.encoder import SoftwareH264Encoder
from appliance.camera.transform import resize_nearest

from .helpers import decode_all


def test_crc16_matches_the_ccitt_false_check_value() -> None:
    # The catalogue check value of CRC-16/CCITT-FALSE over "123456789".
    assert stamp.crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("counter, ms", [(0, 0), (1, 2), (0xFFFFFFFF, 0xFFFFFFFF), (123456, 1_723_456_789)])
@pytest.mark.parametrize("width, height", [(320, 240), (640, 480), (1280, 720), (200, 150)])
def test_round_trip_in_pixels(counter: int, ms: int, width: int, height: int) -> None:
    image = np.full((height, width, 3), 90, np.uint8)
    stamp.draw_stamp(image, stamp.Stamp(counter, ms))
    assert stamp.decode_stamp(image) == stamp.Stamp(counter, ms)
    # Only the top rows are touched.
    assert (image[stamp.stamp_height(width) :] == 90).all()


def test_a_frame_without_a_stamp_reads_as_none() -> None:
    rng = np.random.default_rng(3)
    assert stamp.decode_stamp(np.zeros((240, 320, 3), np.uint8)) is None
    assert stamp.decode_stamp(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) is None
    assert stamp.decode_stamp(np.zeros((4, 8), np.uint8)) is None  # too small to hold one


def test_a_flipped_bit_fails_the_crc() -> None:
    image = np.zeros((240, 320), np.uint8)
    stamp.draw_stamp(image, stamp.Stamp(77, 1234))
    pitch = 320 // stamp.COLS
    for bit in (0, 17, 40, 79):
        damaged = image.copy()
        row, col = divmod(bit, stamp.COLS)
        cell = damaged[row * pitch : (row + 1) * pitch, col * pitch : (col + 1) * pitch]
        cell[:] = stamp.BLACK if cell[0, 0] == stamp.WHITE else stamp.WHITE
        assert stamp.decode_stamp(damaged) is None, bit


def test_reads_a_scaled_canvas_and_rgba() -> None:
    image = np.full((480, 640, 3), 128, np.uint8)
    stamp.draw_stamp(image, stamp.Stamp(42, 987654))
    small = resize_nearest(image, 400, 300)  # the browser shows the video at another size
    rgba = np.concatenate([small, np.full((300, 400, 1), 255, np.uint8)], axis=2)
    assert stamp.decode_stamp(rgba) == stamp.Stamp(42, 987654)


def test_ms_since_is_modular() -> None:
    assert stamp.ms_since(1000, 400) == 600
    assert stamp.ms_since(5, 0xFFFFFFFF - 4) == 10  # across the 2**32 wrap
    assert stamp.ms_since(400, 1000) == -600
    assert stamp.wall_ms(1.5) == 1500


@pytest.mark.parametrize("width, height, bitrate", [(320, 240, 150_000), (640, 480, 400_000)])
def test_survives_h264_at_a_modest_bitrate(width: int, height: int, bitrate: int) -> None:
    # A busy moving picture (noise and a moving gradient) starves the stamp of bits, as a
    # real scene at a low bitrate would.
    rng = np.random.default_rng(5)
    encoder = SoftwareH264Encoder(width, height, 15, bitrate, 1.0, threads=1)
    sent = []
    units = []
    for i in range(30):
        x = np.linspace(0, 4 * np.pi, width)[None, :] + i * 0.4
        base = (127 + 100 * np.sin(x)).astype(np.int16)[:, :, None]
        noise = rng.integers(-40, 40, (height, width, 3))
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        s = stamp.Stamp(1000 + i, stamp.wall_ms(1_700_000_000 + i / 15))
        stamp.draw_stamp(image, s)
        sent.append(s)
        units += encoder.encode(image, "bgr24", 100.0 + i / 15)
    units += encoder.flush()
    frames = decode_all(au.data for au in units)
    assert len(frames) == len(sent)
    got = [stamp.decode_stamp(f.to_ndarray(format="bgr24")) for f in frames]
    assert got == sent
    # The decoder's own grey plane works as well (what a canvas gives after a colour conversion).
    assert stamp.decode_stamp(frames[-1].to_ndarray(format="gray")) == sent[-1]


def test_survives_a_decoder_that_scales() -> None:
    encoder = SoftwareH264Encoder(640, 480, 10, 300_000, 1.0, threads=1)
    image = np.full((480, 640, 3), 200, np.uint8)
    stamp.draw_stamp(image, stamp.Stamp(9, 99))
    units = encoder.encode(image, "bgr24", 1.0) + encoder.flush()
    (frame,) = decode_all(au.data for au in units)
    scaled = frame.reformat(
        width=300, height=225, format="rgb24", interpolation=av.video.reformatter.Interpolation.BILINEAR
    )
    assert stamp.decode_stamp(scaled.to_ndarray()) == stamp.Stamp(9, 99)
