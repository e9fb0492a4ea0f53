"""Hypothesis strategies for JSON messages that are wrong in every way a peer can make them:
garbage text and bytes, and near-valid messages (a valid one with a field retyped, removed,
added, a "type" nobody knows, a huge string, nesting thousands deep, cut off mid-way,
invalid UTF-8 inside a string). Shared by the decoder tests (appliance.room.protocol,
appliance.publisher.channels) and the signaling storm against the real room service.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st

# Nesting this deep is a few kB of text, and deep enough for msgspec's own recursion guard.
DEEP = 5000
_DEEP_MARK = re.compile(r'"__deep_(\d+)_(\w)__"')

# Valid messages a device or viewer sends the room service (appliance.room.protocol.ToService).
TO_SERVICE: list[dict[str, Any]] = [
    {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "to": "v1"},
    {"type": "answer", "sdp": "v=0\r\n"},
    {"type": "ice", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}},
    {
        "type": "ice",
        "candidate": {"candidate": "c", "sdpMid": None, "sdpMLineIndex": 0, "usernameFragment": "ab"},
        "to": "v1",
    },
    {"type": "ice", "candidate": None},
    {"type": "ping"},
    {"type": "request-offer"},
    {"type": "bye"},
    {"type": "bye", "to": "v1"},
    {"type": "error", "code": "room-full", "message": "full", "to": "v1"},
]
# And what the service sends them (ToClient), for the client-side decoder.
TO_CLIENT: list[dict[str, Any]] = [
    {
        "type": "welcome",
        "role": "viewer",
        "peer_id": "v1",
        "room": {"id": "r1", "name": "Lobby"},
        "ice_servers": [{"urls": ["stun:stun.example.org"]}],
        "device_online": True,
        "viewers": 1,
    },
    {"type": "presence", "device_online": False, "viewers": 0},
    {"type": "viewer-joined", "viewer_id": "v1"},
    {"type": "viewer-left", "viewer_id": "v1"},
    {"type": "pong"},
    {"type": "offer", "sdp": "v=0", "from": "device"},
]
SIGNALING_TYPES = sorted({m["type"] for m in TO_SERVICE + TO_CLIENT} | {"ice", "answer", "error"})

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Values that do not survive json.dumps as themselves: spliced into the text afterwards.
_SPECIAL_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "1" + "0" * 400, "-0"]


def _deep_mark(depth: int, kind: Literal["a", "o"]) -> str:
    return f"__deep_{depth}_{kind}__"


def _expand_deep(text: str) -> str:
    def nested(m: re.Match[str]) -> str:
        depth = int(m.group(1))
        if m.group(2) == "a":
            return "[" * depth + "]" * depth
        return '{"x":' * depth + "1" + "}" * depth

    return _DEEP_MARK.sub(nested, text)


@st.composite
def odd_values(draw: st.DrawFn, max_depth: int = DEEP) -> Any:
    """A JSON value of the wrong kind, or a marker for one json.dumps cannot write (NaN, a
    5000-digit integer, nesting max_depth deep), spliced in by `near_valid`."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return "__token_" + str(draw(st.integers(0, len(_SPECIAL_TOKENS) - 1))) + "__"
    if choice == 1:
        depth = draw(st.sampled_from(sorted({2, 50, min(500, max_depth), max_depth})))
        return _deep_mark(depth, draw(st.sampled_from(["a", "o"])))
    if choice == 2:
        return "x" * draw(st.sampled_from([0, 65, 2049, 70_000]))  # past every length limit
    return draw(json_values)


def _expand(text: str) -> str:
    text = re.sub(r'"__token_(\d+)__"', lambda m: _SPECIAL_TOKENS[int(m.group(1))], text)
    return _expand_deep(text)


@st.composite
def near_valid(draw: st.DrawFn, templates: list[dict[str, Any]], max_depth: int = DEEP) -> str:
    """A valid message from templates, mutated one to three times, as JSON text."""
    msg: Any = dict(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(msg, dict):
            break
        op = draw(st.integers(0, 6))
        keys = sorted(msg)
        if op == 0 and keys:  # a field of the wrong type or value
            msg[draw(st.sampled_from(keys))] = draw(odd_values(max_depth))
        elif op == 1 and keys:  # a required field (or "type") missing
            del msg[draw(st.sampled_from(keys))]
        elif op == 2:  # an unknown field
            msg[draw(st.sampled_from(["extra", "from", "to", "sdp", "type ", ""]))] = draw(
                odd_values(max_depth)
            )
        elif op == 3:  # a type nobody knows, or one only the other side sends
            msg["type"] = draw(
                st.sampled_from([*SIGNALING_TYPES, "teleport", "", "PING"]) | st.text(max_size=50)
            )
        elif op == 4:  # the whole message replaced by another JSON value
            msg = draw(odd_values(max_depth))
        elif op == 5 and "candidate" in msg:  # inside the nested object
            inner = msg["candidate"] if isinstance(msg["candidate"], dict) else {}
            inner = dict(inner)
            inner[
                draw(st.sampled_from(["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment", "x"]))
            ] = draw(odd_values(max_depth))
            msg["candidate"] = inner
        else:  # the fields in another order ("type" last makes the decoder look ahead)
            msg = dict(reversed(list(msg.items())))
    text = _expand(json.dumps(msg, ensure_ascii=draw(st.booleans())))
    cut = draw(st.integers(0, 3))
    if cut == 0 and text:  # cut off
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif cut == 1 and text.startswith("{") and len(text) > 2:  # a key repeated
        text = '{"type":"ping",' + text[1:]
    return text


def garbage_text(allow_surrogates: bool = False) -> st.SearchStrategy[str]:
    alphabet = st.characters(exclude_categories=()) if allow_surrogates else st.characters(codec="utf-8")
    return st.text(alphabet, max_size=200) | st.sampled_from(
        ["", " ", "null", "[]", "{}", "0", '""', "{", '{"type"', '{"type":}', "\ufeff{}", "\x00"]
    )


@st.composite
def invalid_utf8(draw: st.DrawFn, templates: list[dict[str, Any]]) -> bytes:
    """JSON bytes with invalid UTF-8: a multi-byte character cut short, a lone continuation
    byte, an encoded surrogate, an overlong form; inside a string or anywhere."""
    raw = json.dumps(draw(st.sampled_from(templates)), ensure_ascii=False).encode()
    junk = draw(st.sampled_from([b"\xc3", b"\xe2\x82", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff"]))
    quote = raw.find(b'"', raw.find(b":") + 1)
    at = quote + 1 if quote > 0 and draw(st.booleans()) else draw(st.integers(0, len(raw)))
    return raw[:at] + junk + raw[at:]


def decoder_inputs(templates: list[dict[str, Any]]) -> st.SearchStrategy[str | bytes]:
    """Anything a decoder taking `str | bytes` may be handed."""
    return (
        near_valid(templates)
        | garbage_text(allow_surrogates=True)
        | st.binary(max_size=300)
        | invalid_utf8(templates)
        | near_valid(templates).map(str.encode)
    )


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame: text, binary, or a text frame whose payload is not UTF-8."""

    kind: Literal["text", "binary", "bad-text"]
    data: str | bytes

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep huge ones readable
        shown = self.data if len(self.data) < 300 else self.data[:150]
        more = "" if len(self.data) < 300 else f"...({len(self.data)} long)"
        return f"Frame({self.kind!r}, {shown!r}{more})"


def frames(templates: list[dict[str, Any]], max_depth: int = DEEP) -> st.SearchStrategy[Frame]:
    """Text and binary frames. (A frame that is not UTF-8 ends its connection: bad_text_frames,
    to be used sparingly.)"""
    text = near_valid(templates, max_depth) | garbage_text()
    return st.one_of(
        text.map(lambda t: Frame("text", t)),
        text.map(lambda t: Frame("text", t)),  # twice as likely: text is what gets decoded
        (st.binary(max_size=64) | near_valid(templates, max_depth).map(str.encode)).map(
            lambda b: Frame("binary", b)
        ),
    )


def bad_text_frames(templates: list[dict[str, Any]]) -> st.SearchStrategy[Frame]:
    return invalid_utf8(templates).map(lambda b: Frame("bad-text", b))
