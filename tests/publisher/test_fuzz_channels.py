"""The data-channel decoders on anything a viewer can send (text or binary messages): a message
or ChannelProtocolError with one of the documented codes, never another exception (one
would escape the kiosk's data-channel callback instead of answering the viewer)."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from hypothesis import given, settings
from room.fuzzing import decoder_inputs  # tests/room, a sibling package

from appliance.publisher import channels

CODES = set(typing.get_args(channels.ChannelError))

FROM_VIEWER: list[dict[str, Any]] = [
    {"type": "join", "name": "Dana", "last_seq": 41},
    {"type": "join"},
    {"type": "ack", "seq": 42},
    {"type": "ack-alert", "seq": 42},
    {"type": "chat", "text": "on my way"},
    {"type": "talk", "active": True},
    {"type": "listen", "on": False},
]
TO_VIEWER: list[dict[str, Any]] = [
    {
        "type": "hello",
        "viewer_id": "v1",
        "kiosk": "Front door",
        "units": "C",
        "threshold_c": 38.0,
        "thermal_box": [0.1, 0.0, 0.8, 1.2],
    },
    {"type": "thermal", "pixels": [22.5] * 64, "thermistor": 24.0, "frame_seq": 3, "rate_hz": 10.0},
    {"type": "state", "state": "idle"},
    {"type": "event", "seq": 1, "topic": "alert.fever", "live": True, "wall_ts": 1.0, "result": "elevated"},
    {"type": "chat", "sender": "kiosk", "text": "hi", "wall_ts": 1.0, "origin": "kiosk"},
    {"type": "talk", "talker": None},
    {"type": "alert-acked", "seq": 1, "by": "Dana", "wall_ts": 1.0},
    {"type": "error", "code": "bad-json"},
]


@settings(max_examples=600, deadline=None)
@given(data=decoder_inputs(FROM_VIEWER))
def test_decode_from_viewer_raises_only_its_error(data: str | bytes) -> None:
    try:
        msg = channels.decode_from_viewer(data)
    except channels.ChannelProtocolError as exc:
        assert exc.code in CODES
    else:
        assert isinstance(msg, typing.get_args(channels.FromViewer))
        assert channels.decode_from_viewer(channels.encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(data=decoder_inputs(TO_VIEWER))
def test_decode_to_viewer_raises_only_its_error(data: str | bytes) -> None:
    try:
        msg = channels.decode_to_viewer(data)
    except channels.ChannelProtocolError as exc:
        assert exc.code in CODES
    else:
        assert isinstance(msg, typing.get_args(channels.ToViewer))


# Regressions: each escaped decode_from_viewer as RecursionError, UnicodeDecodeError or
# UnicodeEncodeError (decode_to_viewer raised msgspec's own errors for everything).
@pytest.mark.parametrize(
    "data",
    [
        '{"x":' + "[" * 3000 + "]" * 3000 + ',"type":"ack","seq":1}',
        b'{"type":"chat","text":"\xe2\x82"}',
        '{"type":"chat","text":"\udc80"}',
    ],
)
def test_inputs_that_escaped_the_decoder(data: str | bytes) -> None:
    with pytest.raises(channels.ChannelProtocolError) as info:
        channels.decode_from_viewer(data)
    assert info.value.code == "bad-json"
    with pytest.raises(channels.ChannelProtocolError):
        channels.decode_to_viewer(data)
