"""H.264 Annex B access units: what the camera promises its consumers, checked and repaired here.

Pure functions over bytes, shared by every backend:

- `nal_units` splits an access unit on its start codes; `nal_types` lists the NAL unit types.
- `parse_sps_head` reads profile_idc, the constraint flags and level_idc from an SPS, which is
  what a WebRTC profile-level-id (42e01f) describes.
- `ParameterSetCache` guarantees SPS and PPS in front of every IDR: the WebRTC publisher passes
  access units through untouched, and a viewer joining at a keyframe needs them in-band.
- `level_for` picks the H.264 level a stream needs (3.1 whenever it fits).
- `to_pts` maps a capture time on the monotonic clock to the 90 kHz time base of camera.h264.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

START_CODE = b"\x00\x00\x01"

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

PROFILE_BASELINE = 66
PTS_HZ = 90_000

# H.264 Annex A, table A-1: (level_idc, max macroblocks per second, max frame size in
# macroblocks, max video bitrate in kbit/s for the Baseline profile).
_LEVELS = (
    (30, 40_500, 1_620, 10_000),
    (31, 108_000, 3_600, 14_000),
    (32, 216_000, 5_120, 20_000),
    (40, 245_760, 8_192, 20_000),
    (41, 245_760, 8_192, 50_000),
    (42, 522_240, 8_704, 50_000),
)
PREFERRED_LEVEL = 31  # profile-level-id 42e01f: what the publisher offers to browsers


def nal_units(au: bytes | memoryview) -> list[memoryview]:
    """The NAL units of an Annex B access unit (start codes removed, trailing zeros kept off).

    Both 3- and 4-byte start codes are accepted: the zero byte of a 4-byte code ends up as
    a trailing zero of the previous unit, which is stripped (trailing_zero_8bits, B.1).
    """
    data = bytes(au)
    view = memoryview(data)
    units: list[memoryview] = []
    pos = data.find(START_CODE)
    while pos != -1:
        begin = pos + 3
        nxt = data.find(START_CODE, begin)
        end = len(data) if nxt == -1 else nxt
        stop = end
        while stop > begin and data[stop - 1] == 0:
            stop -= 1
        if stop > begin:
            units.append(view[begin:stop])
        pos = nxt
    return units


def nal_types(au: bytes | memoryview) -> list[int]:
    return [unit[0] & 0x1F for unit in nal_units(au)]


def is_idr(au: bytes | memoryview) -> bool:
    return NAL_IDR in nal_types(au)


@dataclass(frozen=True)
class SpsHead:
    """The first three bytes of an SPS after its NAL header: profile, constraints, level."""

    profile_idc: int
    constraint_flags: int  # constraint_set0_flag is bit 7 ... constraint_set5_flag is bit 2
    level_idc: int

    def constraint_set(self, n: int) -> bool:
        return bool(self.constraint_flags & (0x80 >> n))

    @property
    def constrained_baseline(self) -> bool:
        # A.2.1.1: Baseline with constraint_set1_flag set (it obeys the Main profile's limits too).
        return self.profile_idc == PROFILE_BASELINE and self.constraint_set(1)

    @property
    def profile_level_id(self) -> str:
        """As in an SDP fmtp line, e.g. '42c01f'."""
        return f"{self.profile_idc:02x}{self.constraint_flags:02x}{self.level_idc:02x}"


def parse_sps_head(sps: bytes | memoryview) -> SpsHead:
    """Parse an SPS NAL unit (with its one-byte NAL header, without the start code)."""
    if len(sps) < 4 or sps[0] & 0x1F != NAL_SPS:
        raise ValueError("not an SPS NAL unit")
    # The three bytes hold no 00 00 03 emulation prevention: profile_idc and level_idc are
    # never both zero with the flags, so they can be read raw.
    return SpsHead(sps[1], sps[2], sps[3])


def find_sps(au: bytes | memoryview) -> SpsHead | None:
    for unit in nal_units(au):
        if unit[0] & 0x1F == NAL_SPS:
            return parse_sps_head(unit)
    return None


class ParameterSetCache:
    """Remembers the latest SPS and PPS and puts them in front of any IDR that lacks them.

    Encoders told to repeat their headers do so, but not all of them in the same buffer as the
    IDR (a hardware encoder may emit a headers-only buffer that picamera2 then discards), so
    the guarantee is enforced here rather than trusted.
    """

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.repaired = 0  # IDRs that needed the cached headers

    def remember(self, au: bytes | memoryview) -> None:
        """Take SPS and PPS from a buffer (e.g. a headers-only one the encoder thread dropped)."""
        for unit in nal_units(au):
            kind = unit[0] & 0x1F
            if kind == NAL_SPS:
                self.sps = bytes(unit)
            elif kind == NAL_PPS:
                self.pps = bytes(unit)

    def ensure(self, au: bytes) -> tuple[bytes, bool]:
        """(the access unit with SPS and PPS before an IDR, whether it holds an IDR)."""
        types = nal_types(au)
        idr = NAL_IDR in types
        if NAL_SPS in types or NAL_PPS in types:
            self.remember(au)
        if not idr or (NAL_SPS in types and NAL_PPS in types):
            return au, idr
        if self.sps is None or self.pps is None:
            return au, idr  # nothing to add yet; the encoder's first IDR always carries them
        self.repaired += 1
        prefix = b"\x00\x00\x00\x01" + self.sps + b"\x00\x00\x00\x01" + self.pps
        return prefix + au, idr


def level_for(width: int, height: int, fps: float, bitrate: int) -> int:
    """level_idc for a stream: 31 (3.1) whenever it fits, else the smallest level that does.

    Level 3.1 covers up to 1280x720 at 30 fps; 1920x1080 needs 4.0. Browsers that offered
    42e01f still decode a higher level in practice (decoders do not enforce it), but staying
    inside 3.1 is what the negotiation promised, so larger pictures are a deliberate choice.
    """
    mbs = math.ceil(width / 16) * math.ceil(height / 16)
    for level, max_mbps, max_fs, max_kbps in _LEVELS:
        if level < PREFERRED_LEVEL:
            continue
        if mbs <= max_fs and mbs * fps <= max_mbps and bitrate <= max_kbps * 1000:
            return level
    return _LEVELS[-1][0]


def to_pts(capture_ts: float) -> int:
    """A monotonic capture time in the 90 kHz time base of camera.h264.

    Absolute (not relative to the stream's start), so pts keep increasing across backend
    restarts within one boot and the publisher never sees time go backwards.
    """
    return round(capture_ts * PTS_HZ)
