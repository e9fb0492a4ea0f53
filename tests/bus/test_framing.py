"""The wire format, pure: encode, decode incrementally, refuse what is malformed or too big."""

from __future__ import annotations

import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.bus.framing import (
    MAX_HEADER,
    PREFIX,
    Envelope,
    FrameDecoder,
    Kind,
    encode_frame,
    encode_payload,
)

KINDS: list[Kind] = list(typing.get_args(Kind))

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def frames(draw: st.DrawFn) -> tuple[Envelope, bytes | None, bytes]:
    env = Envelope(
        kind=draw(st.sampled_from(KINDS)),
        topic=draw(st.text(max_size=40)),
        seq=draw(st.integers(min_value=-(2**63), max_value=2**64 - 1)),
        ts=draw(st.floats(allow_nan=False)),
        payload=msgspec.Raw(encode_payload(draw(msgpack_values))),
    )
    attachment = draw(st.none() | st.binary(min_size=1, max_size=300))
    raw = encode_frame(env.kind, env.topic, bytes(env.payload), seq=env.seq, ts=env.ts, attachment=attachment)
    return env, attachment, raw


def assert_same(got: Envelope, want: Envelope) -> None:
    assert (got.kind, got.topic, got.seq, got.ts) == (want.kind, want.topic, want.seq, want.ts)
    assert bytes(got.payload) == bytes(want.payload)


@given(frames())
def test_round_trip(frame: tuple[Envelope, bytes | None, bytes]) -> None:
    env, attachment, raw = frame
    dec = FrameDecoder()
    [out] = dec.feed(raw)
    assert_same(out.env, env)
    assert out.attachment == attachment
    assert bytes(out.raw) == raw
    assert dec.buffered == 0 and dec.error is None


def test_round_trip_without_and_with_attachment() -> None:
    plain = encode_frame("pub", "test.x", encode_payload({"n": 1}), seq=7, ts=1.5)
    with_att = encode_frame("pub", "camera.h264", encode_payload({"pts": 1}), attachment=b"\x00\x00\x01\x65")
    a, b = FrameDecoder().feed(plain + with_att)
    assert (a.env.kind, a.env.topic, a.env.seq, a.env.ts, a.attachment) == ("pub", "test.x", 7, 1.5, None)
    assert msgspec.msgpack.decode(a.env.payload) == {"n": 1}
    assert b.attachment == b"\x00\x00\x01\x65"
    assert msgspec.msgpack.decode(b.env.payload) == {"pts": 1}


def test_empty_attachment_is_none() -> None:
    [out] = FrameDecoder().feed(encode_frame("pub", "test.x", attachment=b""))
    assert out.attachment is None


def test_byte_by_byte() -> None:
    stream = b"".join(
        encode_frame(
            "pub", f"test.{i}", encode_payload({"n": i}), seq=i, attachment=b"x" * i if i % 2 else None
        )
        for i in range(5)
    )
    dec = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += dec.feed(stream[i : i + 1])
    assert [f.env.seq for f in out] == [0, 1, 2, 3, 4]
    assert [f.attachment for f in out] == [None, b"x", None, b"xxx", None]
    assert dec.buffered == 0 and dec.error is None


@given(st.lists(frames(), min_size=1, max_size=5), st.data())
def test_any_chunking_gives_the_same_frames(
    items: list[tuple[Envelope, bytes | None, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(raw for _, _, raw in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += dec.feed(stream[start:end])
    assert len(out) == len(items)
    for got, (env, attachment, raw) in zip(out, items, strict=True):
        assert_same(got.env, env)
        assert got.attachment == attachment
        assert bytes(got.raw) == raw
    assert dec.buffered == 0


def test_oversized_frame_refused_from_its_prefix() -> None:
    dec = FrameDecoder(max_frame=1024)
    # Only the 8-byte prefix has arrived: the announced size alone is enough to refuse it.
    assert dec.feed(PREFIX.pack(20, 2000)) == []
    assert dec.error is not None and "exceeds the limit of 1024" in str(dec.error)
    assert dec.buffered == 0
    # The rest of the stream is ignored, not buffered.
    assert dec.feed(b"\x00" * 5000) == []
    assert dec.buffered == 0


def test_frames_before_a_bad_one_are_returned() -> None:
    good = encode_frame("pub", "test.x", encode_payload({"n": 1}))
    dec = FrameDecoder(max_frame=1024)
    out = dec.feed(good + PREFIX.pack(10, 10_000))
    assert [f.env.topic for f in out] == ["test.x"]
    assert dec.error is not None


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    header_len = len(encode_frame("pub", "test.x")) - PREFIX.size
    dec = FrameDecoder(max_frame=header_len + 100)
    [out] = dec.feed(encode_frame("pub", "test.x", attachment=b"a" * 100))
    assert out.attachment == b"a" * 100
    dec.feed(encode_frame("pub", "test.x", attachment=b"a" * 101))
    assert dec.error is not None


@pytest.mark.parametrize("hlen", [0, MAX_HEADER + 1, 2**32 - 1])
def test_bad_header_length(hlen: int) -> None:
    dec = FrameDecoder()
    assert dec.feed(PREFIX.pack(hlen, 0) + b"\x90" * 16) == []
    assert dec.error is not None and f"bad header length {hlen}" in str(dec.error)
    assert dec.buffered == 0


@pytest.mark.parametrize(
    "header",
    [
        b"\xc0",  # nil, not an array
        b"\x95\xa4nope\xa0\x00\xcb" + b"\x00" * 8 + b"\xc0",  # unknown kind
        b"\x92\xa3pub\x05",  # topic is not a string
        b"\x95\xa3pub\xa6test.x\x00\xcb\x00\x00",  # truncated float
        b"\x91\xa3pub\xc0",  # trailing bytes after the header
    ],
)
def test_malformed_envelope(header: bytes) -> None:
    dec = FrameDecoder()
    assert dec.feed(PREFIX.pack(len(header), 0) + header) == []
    assert dec.error is not None and "malformed envelope" in str(dec.error)
    # A broken stream stays broken: nothing after it is decoded.
    assert dec.feed(encode_frame("pub", "test.x")) == []


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_random_bytes_never_raise(data: bytes) -> None:
    dec = FrameDecoder(max_frame=4096)
    frames_out = dec.feed(data)
    # Whatever came out is a whole frame; anything else is either buffered or an error.
    assert sum(len(f.raw) for f in frames_out) + dec.buffered <= len(data)
    if dec.error is not None:
        assert dec.buffered == 0
