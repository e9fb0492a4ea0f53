"""The signaling protocol between the room service, kiosks (devices) and viewers.

This module is the contract: the room service (appliance.room), the kiosk's publisher
(appliance.publisher) and the viewer page's JavaScript all speak exactly these messages.
Change it here first.

Transport: one WebSocket, ``GET /api/v1/ws``, text frames, one JSON object per frame, at most
MAX_MESSAGE_BYTES. Authentication happens before the upgrade:

- a device sends ``Authorization: Bearer <device token>`` (from pairing);
- a viewer first exchanges its invite token, ``POST /api/v1/viewer/session {"invite": "..."}``
  -> ``{"session": "...", "expires_in": 3600, "room": {"id": .., "name": ..}}``, then opens
  ``/api/v1/ws?session=<session>`` (browsers cannot set headers on a WebSocket).

Flow (the device offers: it owns the tracks and the data channels):

    viewer connects          service -> viewer   welcome (ice_servers, device_online, viewers)
                             service -> device   viewer-joined {viewer_id}
    device                   device  -> service  offer {to: viewer_id, sdp}
                             service -> viewer   offer {from: "device", sdp}
    viewer                   viewer  -> service  answer {sdp}
                             service -> device   answer {from: viewer_id, sdp}
    either side, any time    ice {candidate} relayed the same way (to/from as above);
                             candidate null means end of candidates
    viewer wants a new call  viewer  -> service  request-offer  -> device gets viewer-joined again
    someone leaves           service -> device   viewer-left {viewer_id};
                             service -> viewers  presence {device_online, viewers}
    device full              device  -> service  error {to: viewer_id, code: "room-full"}
                             service -> viewer   error {code: "room-full", message}

Every client may send ``ping`` and gets ``pong``. Anything malformed, of an unknown type, too
large or too frequent gets ``error`` {code, message, ref} (ref: the offending message's type
when known); a connection that keeps misbehaving is closed with code 1008 (policy) and a
reason. So is a connection replaced by a newer one with the same credentials: a kiosk's device
token, or a viewer's session (one connection per session). Data-channel payloads (telemetry,
events, chat, acks) never pass through the service: they ride the peer connection, described
in appliance.publisher.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.jsonwire import decode_message

MAX_MESSAGE_BYTES = 64 * 1024
# Per connection: a burst of RATE_BURST messages, refilled at RATE_PER_S.
RATE_PER_S = 20.0
RATE_BURST = 60

PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MESSAGE_BYTES)]

ErrorCode = Literal[
    "bad-json",
    "bad-message",
    "unknown-type",
    "too-large",
    "rate-limited",
    "no-device",
    "no-such-viewer",
    "room-full",
    "unauthorized",
    "internal",
]


class Msg(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


class IceServer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceCandidate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """As RTCIceCandidateInit in the browser."""

    candidate: Annotated[str, msgspec.Meta(max_length=2048)]
    sdpMid: str | None = None  # the browser's field names
    sdpMLineIndex: int | None = None
    # Browsers put it in RTCIceCandidate.toJSON(); without it here their candidates were refused.
    usernameFragment: str | None = None


class RoomInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    name: str


# --- service -> client ----------------------------------------------------------------------


class Welcome(Msg, tag="welcome"):
    role: Literal["device", "viewer"]
    peer_id: PeerId
    room: RoomInfo
    ice_servers: list[IceServer]
    device_online: bool
    viewers: int


class Presence(Msg, tag="presence"):
    device_online: bool
    viewers: int


class ViewerJoined(Msg, tag="viewer-joined"):
    viewer_id: PeerId


class ViewerLeft(Msg, tag="viewer-left"):
    viewer_id: PeerId


class Pong(Msg, tag="pong"):
    pass


class Error(Msg, tag="error"):
    code: ErrorCode
    message: str = ""
    ref: str | None = None
    # Device -> service only: the viewer this error is for ("room-full").
    to: PeerId | None = None


# --- relayed between a device and a viewer ----------------------------------------------------


class Offer(Msg, tag="offer"):
    sdp: Sdp
    to: PeerId | None = None  # device -> service: the viewer
    from_: PeerId | None = msgspec.field(default=None, name="from")  # service -> viewer: "device"


class Answer(Msg, tag="answer"):
    sdp: Sdp
    from_: PeerId | None = msgspec.field(default=None, name="from")  # service -> device: the viewer


class Ice(Msg, tag="ice"):
    candidate: IceCandidate | None
    to: PeerId | None = None
    from_: PeerId | None = msgspec.field(default=None, name="from")


# --- client -> service ----------------------------------------------------------------------


class Ping(Msg, tag="ping"):
    pass


class RequestOffer(Msg, tag="request-offer"):
    pass


class Bye(Msg, tag="bye"):
    """A device ending one viewer's call (to), or a viewer leaving."""

    to: PeerId | None = None


ToService = Offer | Answer | Ice | Ping | RequestOffer | Bye | Error
ToClient = Welcome | Presence | ViewerJoined | ViewerLeft | Pong | Error | Offer | Answer | Ice | Bye

_to_service = msgspec.json.Decoder(ToService)
_to_client = msgspec.json.Decoder(ToClient)
_encoder = msgspec.json.Encoder()


class ProtocolError(ValueError):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code


def _decode(
    data: str | bytes, decoder: msgspec.json.Decoder[object], limit: int = MAX_MESSAGE_BYTES
) -> object:
    return decode_message(data, decoder, limit, ProtocolError)


class _Kind(msgspec.Struct):
    type: str | None = None


_kind = msgspec.json.Decoder(_Kind)


def message_type(data: str | bytes) -> str | None:
    """The "type" of a message that may not decode, for an error's ref: at most 40 characters,
    None when there is no readable one. Never raises, whatever the input (deep nesting,
    invalid UTF-8, lone surrogates, huge numbers): errors about bad messages must not fail."""
    try:
        kind = _kind.decode(data.encode() if isinstance(data, str) else data).type
    except (msgspec.DecodeError, UnicodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    return None if kind is None else kind[:40]


def decode_to_service(data: str | bytes) -> ToService:
    """What a device or viewer sent; raises ProtocolError with the error code to reply."""
    msg = _decode(data, _to_service)
    return msg  # type: ignore[return-value]


def decode_to_client(data: str | bytes, limit: int = MAX_MESSAGE_BYTES) -> ToClient:
    """What the service sent; `limit` for a client that allows for what the service adds to a
    message it relays (the kiosk: publisher/signaling.py READ_LIMIT)."""
    msg = _decode(data, _to_client, limit)
    return msg  # type: ignore[return-value]


def encode(msg: Msg) -> str:
    return _encoder.encode(msg).decode()
