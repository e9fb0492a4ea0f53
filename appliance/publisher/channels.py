"""The data channels between the kiosk and a viewer: every message, both ways. The contract.

appliance/room/static/viewer.js speaks exactly these messages; change them here first. The
signaling that sets the call up is appliance.room.protocol; these ride the peer connection
itself and never pass through the room service.

Each message is one JSON object in one text message, with a "type" field. The kiosk creates
both channels (it makes the offer):

``telemetry`` (unordered, maxRetransmits 0: a lost message is superseded by the next)
    kiosk -> viewer  thermal   every thermal.frame: 64 pixels in °C (row-major, row 0 = top,
                               0.1 °C resolution), thermistor, frame_seq, rate_hz
                     state     screening.state on change, and again every second so that a
                               lost one is corrected within a second

``events`` (reliable, ordered)
    kiosk -> viewer  hello     first, when the channel opens: protocol version, the viewer's id,
                               the kiosk's name, units (C|F), the fever threshold, where the
                               thermal image lies on the video (thermal_box), the newest seq
                     event     a screening result or a fever alert with its durable seq; an
                               elevated result comes twice with the same seq (topic
                               screening.result, then alert.fever). live = false for events
                               replayed after a reconnect: show them in the history, no alarm.
                               acked_by: who acknowledged the alert, if someone did.
                     chat      text from the kiosk or another viewer (sender, origin)
                     talk      who holds the push-to-talk floor (talker, null when free;
                               you = this viewer holds it)
                     alert-acked  a viewer acknowledged the fever alert seq
                     error     the viewer's last message was refused (code, message, ref)
    viewer -> kiosk  join      first, after hello: the viewer's display name and the last seq
                               it acknowledged in an earlier call (null for a new viewer).
                               The kiosk then sends what that viewer missed (from
                               screening.events_since, live = false), then live events.
                               Before it, talk (active), chat and ack-alert are refused
                               (error not-allowed): they act under the viewer's name.
                     ack       the highest seq the viewer has received and shown (cumulative)
                     ack-alert a person acknowledged the fever alert seq (the button)
                     chat      text for the kiosk's screen (published on call.chat) and the
                               other viewers
                     talk      active true: asks for the floor and, once granted, its audio
                               plays on the kiosk's speaker; false: releases it
                     listen    on true: the viewer unmuted and wants the kiosk's microphone;
                               false: muted. The page starts muted, and the kiosk's microphone
                               is open only while some viewer listens.

Example, an elevated result reaching a viewer and its acknowledgement:

    <- {"type":"event","seq":42,"topic":"screening.result","live":true,"wall_ts":1718000000.5,
        "result":"elevated","estimate_c":38.4,"confidence":0.9}
    <- {"type":"event","seq":42,"topic":"alert.fever","live":true,"wall_ts":1718000000.5,
        "result":"elevated","estimate_c":38.4,"confidence":0.9,"threshold_c":38.0}
    -> {"type":"ack","seq":42}
    -> {"type":"ack-alert","seq":42}
    <- {"type":"alert-acked","seq":42,"by":"Dana","wall_ts":1718000007.1}   (to every viewer)

Compatibility: the viewer page is served by the room service, which may run another release
than the kiosk, so unknown fields are ignored both ways and an unknown type gets an error
reply, never a closed call. `hello.protocol` is raised only for changes an old peer would
misread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from appliance.bus.topics import ResultName, ScreeningStateName
from appliance.jsonwire import decode_message

PROTOCOL = 1
TELEMETRY = "telemetry"
EVENTS = "events"
MAX_INBOUND_BYTES = 16 * 1024
# Per viewer: a burst of RATE_BURST messages, refilled at RATE_PER_S (acks count too; the
# viewer page sends its newest seq at most every 250 ms; chat has its own, slower limit in
# call.py; talk is far slower than this in honest use).
RATE_PER_S = 20.0
RATE_BURST = 60

ChannelError = Literal["bad-json", "bad-message", "unknown-type", "too-large", "rate-limited", "not-allowed"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0)]


class Msg(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    pass


# --- kiosk -> viewer ---------------------------------------------------------------------------


class Hello(Msg, tag="hello"):
    viewer_id: str
    kiosk: str
    units: Literal["C", "F"]
    threshold_c: float
    # Where the thermal sensor's view lies on the video, as fractions of the picture: x, y,
    # width, height (it may reach past the edges: the sensor sees 60° square, the camera a
    # wider, flatter field).
    thermal_box: tuple[float, float, float, float]
    last_seq: int = 0
    protocol: int = PROTOCOL


class Thermal(Msg, tag="thermal"):
    pixels: list[float]
    thermistor: float
    frame_seq: int
    rate_hz: float


class State(Msg, tag="state"):
    state: ScreeningStateName
    progress: float = 0.0
    result: ResultName | None = None
    estimate_c: float | None = None
    distance_m: float | None = None
    reason: str = ""


class Event(Msg, tag="event"):
    seq: int
    topic: Literal["screening.result", "alert.fever"]
    live: bool
    wall_ts: float
    result: ResultName
    estimate_c: float | None = None
    confidence: float = 0.0
    distance_m: float | None = None
    threshold_c: float | None = None  # alerts only
    acked_by: str | None = None  # alerts only, once someone acknowledged it


class Chat(Msg, tag="chat"):
    sender: str
    text: str
    wall_ts: float
    origin: Literal["kiosk", "viewer"]


class Talk(Msg, tag="talk"):
    talker: str | None = None
    you: bool = False


class AlertAcked(Msg, tag="alert-acked"):
    seq: int
    by: str
    wall_ts: float


class Problem(Msg, tag="error"):
    code: ChannelError
    message: str = ""
    ref: str | None = None


# --- viewer -> kiosk ---------------------------------------------------------------------------


class Join(Msg, tag="join"):
    name: Name = "viewer"
    last_seq: Seq | None = None


class Ack(Msg, tag="ack"):
    seq: Seq


class AckAlert(Msg, tag="ack-alert"):
    seq: Annotated[int, msgspec.Meta(ge=1)]


class Say(Msg, tag="chat"):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class TalkRequest(Msg, tag="talk"):
    active: bool


class Listen(Msg, tag="listen"):
    on: bool


ToViewer = Hello | Thermal | State | Event | Chat | Talk | AlertAcked | Problem
FromViewer = Join | Ack | AckAlert | Say | TalkRequest | Listen

_from_viewer = msgspec.json.Decoder(FromViewer)
_to_viewer = msgspec.json.Decoder(ToViewer)
_encoder = msgspec.json.Encoder()


class ChannelProtocolError(ValueError):
    def __init__(self, code: ChannelError, message: str) -> None:
        super().__init__(message)
        self.code: ChannelError = code


def encode(msg: Msg) -> str:
    return _encoder.encode(msg).decode()


def _decode(data: str | bytes, decoder: msgspec.json.Decoder[object], limit: int | None) -> object:
    return decode_message(data, decoder, limit, ChannelProtocolError)


def decode_from_viewer(data: str | bytes) -> FromViewer:
    """A viewer's message; raises ChannelProtocolError with the code to reply, and nothing else
    whatever the input (text or binary)."""
    msg = _decode(data, _from_viewer, MAX_INBOUND_BYTES)
    return msg  # type: ignore[return-value]


def decode_to_viewer(data: str | bytes) -> ToViewer:
    """What the kiosk sent (for tests and tools that play the viewer); ChannelProtocolError as
    decode_from_viewer, without its size limit."""
    msg = _decode(data, _to_viewer, None)
    return msg  # type: ignore[return-value]


def clean_text(text: str, limit: int) -> str:
    """Text for another person's screen: control characters out, whitespace collapsed."""
    kept = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(kept.split())[:limit]


def thermal_pixels(pixels: list[float]) -> list[float]:
    """0.1 °C is finer than the sensor's accuracy and halves the JSON."""
    return [round(p, 1) for p in pixels]


def thermal_box(
    camera_hfov_deg: float, camera_vfov_deg: float, thermal_fov_deg: float
) -> tuple[float, float, float, float]:
    """The thermal sensor's field on the video, for co-located, co-aligned sensor and camera.

    Both are pinhole projections about the same axis, so the sensor's edge at thermal_fov/2
    lands at tan(thermal_fov/2) / tan(camera_fov/2) of the half-picture.
    """
    half_t = math.tan(math.radians(thermal_fov_deg) / 2)
    w = half_t / math.tan(math.radians(camera_hfov_deg) / 2)
    h = half_t / math.tan(math.radians(camera_vfov_deg) / 2)
    return (round((1 - w) / 2, 4), round((1 - h) / 2, 4), round(w, 4), round(h, 4))


@dataclass
class TokenBucket:
    """Inbound rate limit per viewer: `take()` False means refuse this message."""

    rate: float = RATE_PER_S
    burst: float = RATE_BURST
    tokens: float = field(default=RATE_BURST)
    last: float | None = None

    def take(self, now: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
