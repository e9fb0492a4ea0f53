"""The data-channel contract: what goes over the wire, and what the kiosk refuses."""

from __future__ import annotations

import json

import pytest

from appliance.publisher import channels


def test_the_documented_alert_example_is_what_the_kiosk_sends() -> None:
    result = channels.Event(
        seq=42,
        topic="screening.result",
        live=True,
        wall_ts=1718000000.5,
        result="elevated",
        estimate_c=38.4,
        confidence=0.9,
    )
    alert = channels.Event(
        seq=42,
        topic="alert.fever",
        live=True,
        wall_ts=1718000000.5,
        result="elevated",
        estimate_c=38.4,
        confidence=0.9,
        threshold_c=38.0,
    )
    assert json.loads(channels.encode(result)) == {
        "type": "event",
        "seq": 42,
        "topic": "screening.result",
        "live": True,
        "wall_ts": 1718000000.5,
        "result": "elevated",
        "estimate_c": 38.4,
        "confidence": 0.9,
    }
    assert json.loads(channels.encode(alert))["threshold_c"] == 38.0
    # And the module's docstring shows exactly these lines.
    doc = channels.__doc__ or ""
    for text in (channels.encode(result), channels.encode(alert)):
        assert _squash(text) in _squash(doc)


def _squash(text: str) -> str:
    return "".join(text.split()).replace("<-", "")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"type":"join","name":"Dana","last_seq":41}', channels.Join(name="Dana", last_seq=41)),
        ('{"type":"join"}', channels.Join()),
        ('{"type":"ack","seq":42}', channels.Ack(seq=42)),
        ('{"type":"ack-alert","seq":42}', channels.AckAlert(seq=42)),
        ('{"type":"chat","text":"hello"}', channels.Say(text="hello")),
        ('{"type":"talk","active":true}', channels.TalkRequest(active=True)),
        # A newer viewer page may add fields: they are ignored, not refused.
        ('{"type":"ack","seq":1,"client":"v2"}', channels.Ack(seq=1)),
    ],
)
def test_viewer_messages_decode(raw: str, expected: channels.Msg) -> None:
    assert channels.decode_from_viewer(raw) == expected
    assert channels.decode_from_viewer(raw.encode()) == expected


@pytest.mark.parametrize(
    "raw, code",
    [
        ("not json", "bad-json"),
        ('{"type":"dance"}', "unknown-type"),
        ('{"seq":1}', "bad-message"),
        ('{"type":"ack","seq":-1}', "bad-message"),
        ('{"type":"ack-alert","seq":0}', "bad-message"),
        ('{"type":"chat","text":""}', "bad-message"),
        ('{"type":"chat","text":"' + "x" * 1001 + '"}', "bad-message"),
        ('{"type":"join","name":"' + "n" * 65 + '"}', "bad-message"),
        ('{"type":"chat","text":"' + "x" * channels.MAX_INBOUND_BYTES + '"}', "too-large"),
        ("[1, 2]", "bad-message"),
    ],
)
def test_bad_viewer_messages_get_an_error_code(raw: str, code: str) -> None:
    with pytest.raises(channels.ChannelProtocolError) as info:
        channels.decode_from_viewer(raw)
    assert info.value.code == code


def test_kiosk_messages_round_trip() -> None:
    hello = channels.Hello(
        viewer_id="v1", kiosk="Front door", units="C", threshold_c=38.0, thermal_box=(0.1, 0.0, 0.8, 1.2)
    )
    back = channels.decode_to_viewer(channels.encode(hello))
    assert back == hello and isinstance(back, channels.Hello) and back.protocol == channels.PROTOCOL
    talk = channels.Talk(talker=None)
    assert json.loads(channels.encode(talk)) == {"type": "talk"}


def test_text_for_the_kiosk_screen_is_cleaned() -> None:
    assert channels.clean_text("  hi\x00 there\n\tyou \u202e ", 100) == "hi there you"
    assert channels.clean_text("abc def", 5) == "abc d"


def test_thermal_pixels_are_rounded_to_a_tenth() -> None:
    assert channels.thermal_pixels([36.44, 36.46, -0.04]) == [36.4, 36.5, -0.0]


def test_thermal_box_from_the_fields_of_view() -> None:
    assert channels.thermal_box(60.0, 60.0, 60.0) == (0.0, 0.0, 1.0, 1.0)
    x, y, w, h = channels.thermal_box(62.2, 48.8, 60.0)
    # The sensor sees a little less than the camera across, more than it top to bottom.
    assert 0.9 < w < 1.0 and h > 1.0
    assert x == pytest.approx((1 - w) / 2, abs=1e-4) and y == pytest.approx((1 - h) / 2, abs=1e-4)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = channels.TokenBucket(rate=10.0, burst=5, tokens=5)
    assert all(bucket.take(100.0) for _ in range(5))
    assert not bucket.take(100.0)
    assert bucket.take(100.125)  # 0.125 s at 10/s is one more
    assert not bucket.take(100.125)
