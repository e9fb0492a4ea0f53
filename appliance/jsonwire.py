"""Decoding a JSON message from a peer (signaling, data channels) into its tagged-union type,
where every way the input can be wrong becomes one error code and nothing else escapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

WireError = Literal["bad-json", "bad-message", "unknown-type", "too-large"]


def decode_message(
    data: str | bytes,
    decoder: msgspec.json.Decoder[object],
    limit: int | None,
    error: Callable[[WireError, str], Exception],
) -> object:
    """The decoded message; raises error(code, text) for any bad input (text or binary)."""
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeEncodeError:  # a lone surrogate: no peer can have sent it as UTF-8
        raise error("bad-json", "the message is not valid UTF-8") from None
    if limit is not None and len(raw) > limit:
        raise error("too-large", f"message of {len(raw)} bytes; the limit is {limit}")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "Invalid value" in text and "`$.type`" in text:
            raise error("unknown-type", text) from None
        raise error("bad-message", text) from None
    except msgspec.DecodeError as exc:
        raise error("bad-json", str(exc)) from None
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a JSON string; a
        # binary data-channel message carries any bytes.
        raise error("bad-json", "the message is not valid UTF-8") from None
    except RecursionError:
        # msgspec's own depth guard, for arrays or objects nested some thousand levels deep
        # (a few kB of "[[[["): it unwound cleanly, so this is just another malformed message.
        raise error("bad-json", "the message is nested too deeply") from None
