"""Annex B parsing, the SPS head, parameter-set repair, levels and the 90 kHz time base."""

from __future__ import annotations

import pytest

from appliance.camera import h264

SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x02, 0x80])  # profile 66, constraint_set0+1, level 3.1
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84, 0x00, 0x33])
SLICE = bytes([0x41, 0x9A, 0x02])


def annexb(*units: bytes, long: bool = True) -> bytes:
    code = b"\x00\x00\x00\x01" if long else b"\x00\x00\x01"
    return b"".join(code + u for u in units)


def test_nal_units_with_both_start_code_lengths() -> None:
    au = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    assert [bytes(u) for u in h264.nal_units(au)] == [SPS, PPS, IDR]
    assert h264.nal_types(au) == [7, 8, 5]
    assert h264.is_idr(au)
    assert not h264.is_idr(annexb(SLICE))
    assert h264.nal_units(b"") == []


def test_sps_head() -> None:
    head = h264.parse_sps_head(SPS)
    assert (head.profile_idc, head.level_idc) == (66, 31)
    assert head.constraint_set(0) and head.constraint_set(1) and not head.constraint_set(2)
    assert head.constrained_baseline
    assert head.profile_level_id == "42c01f"
    assert not h264.parse_sps_head(bytes([0x67, 0x42, 0x00, 0x1F])).constrained_baseline  # plain Baseline
    assert not h264.parse_sps_head(bytes([0x67, 0x64, 0x40, 0x1F])).constrained_baseline  # High
    with pytest.raises(ValueError):
        h264.parse_sps_head(PPS)
    assert h264.find_sps(annexb(SPS, PPS, IDR)) == head
    assert h264.find_sps(annexb(SLICE)) is None


def test_parameter_sets_go_in_front_of_a_bare_idr() -> None:
    cache = h264.ParameterSetCache()
    first, idr = cache.ensure(annexb(SPS, PPS, IDR))
    assert idr and first == annexb(SPS, PPS, IDR)
    p, idr = cache.ensure(annexb(SLICE))
    assert not idr and p == annexb(SLICE)
    repaired, idr = cache.ensure(annexb(IDR))
    assert idr and h264.nal_types(repaired) == [7, 8, 5]
    assert cache.repaired == 1


def test_headers_from_a_dropped_buffer_are_remembered() -> None:
    cache = h264.ParameterSetCache()
    bare, _ = cache.ensure(annexb(IDR))
    assert h264.nal_types(bare) == [5]  # nothing known yet: passed through as it is
    cache.remember(annexb(SPS, PPS))
    fixed, _ = cache.ensure(annexb(IDR, long=False))
    assert [bytes(u) for u in h264.nal_units(fixed)] == [SPS, PPS, IDR]


@pytest.mark.parametrize(
    "width, height, fps, bitrate, level",
    [
        (320, 240, 30, 500_000, 31),
        (640, 480, 30, 1_500_000, 31),
        (1280, 720, 30, 4_000_000, 31),
        (1280, 720, 60, 4_000_000, 32),
        (1920, 1080, 30, 6_000_000, 40),
        (640, 480, 30, 16_000_000, 32),  # above level 3.1's bitrate cap
    ],
)
def test_level_for(width: int, height: int, fps: int, bitrate: int, level: int) -> None:
    assert h264.level_for(width, height, fps, bitrate) == level


def test_pts_is_90khz_of_the_monotonic_clock() -> None:
    assert h264.to_pts(1.0) == 90_000
    assert h264.to_pts(12.5) - h264.to_pts(12.5 - 1 / 30) == 3000
