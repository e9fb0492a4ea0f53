"""srtp_batch.Protector: the bytes pylibsrtp's own protect() makes, packet for packet."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from appliance.publisher import srtp_batch
from appliance.publisher.srtp_batch import Protector

KEY = bytes(range(30))  # 16-byte master key and 14-byte salt (AES_CM_128_HMAC_SHA1_80)
SSRC = 0x1234ABCD
SIZES = (1200, 1200, 1200, 1200, 1200, 311)  # a frame: full FU-A fragments, then a short one


def session() -> Session:
    return Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))


def rtp(seq: int, size: int) -> bytes:
    return struct.pack("!BBHLL", 0x80, 102, seq & 0xFFFF, seq * 3000, SSRC) + os.urandom(size)


def test_same_bytes_as_protect_across_a_rollover() -> None:
    mine, theirs = session(), session()
    fast = Protector(mine)
    assert fast.fast, "pylibsrtp changed: protect_all falls back to protect() (slower, correct)"
    # Around the 16-bit sequence wrap, where the rollover counter must follow.
    frames = [
        [rtp(seq, size) for seq, size in zip(range(s, s + 6), SIZES, strict=True)]
        for s in range(65_520, 65_560, 6)
    ]
    for frame in frames:
        assert fast.protect_all(frame) == [theirs.protect(p) for p in frame]


def test_an_oversized_packet_is_refused_as_protect_refuses_it() -> None:
    with pytest.raises(ValueError, match="too long"):
        Protector(session()).protect_all([rtp(1, 1500)])
    with pytest.raises(ValueError, match="too long"):
        session().protect(rtp(1, 1500))


def test_a_libsrtp_error_is_pylibsrtps_error() -> None:
    s = Session()  # no stream: libsrtp has no context for the SSRC
    with pytest.raises(pylibsrtp.Error) as theirs:
        s.protect(rtp(1, 100))
    with pytest.raises(pylibsrtp.Error) as mine:
        Protector(s).protect_all([rtp(1, 100)])
    assert str(mine.value) == str(theirs.value)


def test_another_pylibsrtp_uses_protect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(srtp_batch.pylibsrtp, "__version__", "9.0.0")
    mine, theirs = session(), session()
    fallback = Protector(mine)
    assert not fallback.fast
    frame = [rtp(7, 500), rtp(8, 500)]
    assert fallback.protect_all(frame) == [theirs.protect(p) for p in frame]
