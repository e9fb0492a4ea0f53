"""SRTP protection for a frame's packets at once: pylibsrtp's Session.protect, minus its
per-call wrapping.

Why: a viewer's sender protects ~175 packets a second, and pylibsrtp 1.0's `protect()` spends
about as long around the libsrtp call as in it (a new `int *` from cffi, type and size checks,
two method calls) -- on the bench machine that wrapping was the largest thing left in what
each extra viewer cost the publisher. `protect_all` makes the same libsrtp call (srtp_protect,
in place, in the session's own 1500-byte buffer, as `protect()` does) for each packet in turn.
The output is the same bytes (tests/publisher/test_srtp_batch.py compares the two), and a
libsrtp error raises the same pylibsrtp.Error.

It relies on Session's `_srtp`, `_cdata` and `_buffer`; for a pylibsrtp version it was not
checked against, or a session without them, it calls `protect()` per packet instead.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp
from pylibsrtp import Session

CHECKED_PYLIBSRTP = ("1.0",)  # major.minor versions whose Session.protect this mirrors

try:
    from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]
except ImportError:  # a pylibsrtp laid out differently: protect() it is
    ffi = lib = None


def fast(session: Session) -> bool:
    """protect_all can make the libsrtp calls itself for this session."""
    return (
        lib is not None
        and ".".join(pylibsrtp.__version__.split(".")[:2]) in CHECKED_PYLIBSRTP
        and all(hasattr(session, a) for a in ("_srtp", "_cdata", "_buffer"))
    )


class Protector:
    """One session's protect_all (made once per sender: the check is not free)."""

    __slots__ = ("_length", "fast", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.fast = fast(session)
        self._length: Any = ffi.new("int *") if self.fast else None

    def protect_all(self, packets: list[bytes]) -> list[bytes]:
        """Each packet SRTP-protected, in order (the session's rollover counter follows)."""
        if not self.fast:
            return [self.session.protect(p) for p in packets]
        session: Any = self.session
        srtp, cdata, buffer = session._srtp[0], session._cdata, session._buffer
        length = self._length
        limit = len(cdata) - pylibsrtp.SRTP_MAX_TRAILER_LEN  # the room protect() keeps free
        protect = lib.srtp_protect
        ok = lib.srtp_err_status_ok
        out = []
        for data in packets:
            n = len(data)
            if n > limit:
                raise ValueError("packet is too long")
            length[0] = n
            buffer[0:n] = data
            rc = protect(srtp, cdata, length)
            if rc != ok:
                raise pylibsrtp.Error(pylibsrtp.ERRORS[rc])
            out.append(buffer[0 : length[0]])
        return out
