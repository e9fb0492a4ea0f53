"""RTCP sender reports only from a sender that is sending: aiortc's reports, minus the idle ones.

Why: aiortc's RTCRtpSender sends a sender report (with its SDES CNAME) every 0.5-1.5 s from the
moment the transceiver starts, whether or not it has sent a single RTP packet. Every viewer has
a kiosk-microphone sender from the start (audio.py), silent until that viewer unmutes, so each
viewer cost a report a second that reported nothing. A lone datagram like that, sent at a
moment of its own, also wakes whatever receives it: on the bench VM a loopback datagram that
wakes a sleeping process costs the sender about 0.1 ms of CPU (6 us when the receiver is busy),
so these reports were a measurable part of what each viewer cost the publisher.

RFC 3550 6.4 makes a participant a sender, and a sender report worth sending, only if it sent
RTP since the report before the last one. `install()` wraps one sender's `_send_rtcp` (an
instance attribute, as peer.py's keyframe hook does) so that a report from a sender with no RTP
sent since then is dropped; one more report follows the last packet, as the RFC has it, and
reports resume with the next packet. A BYE and anything that is not a sender report pass as
before.

It relies on RTCRtpSender's `_send_rtcp(packets)` and its name-mangled `__packet_count`;
install() refuses (aiortc keeps reporting, as before) for a sender without them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpSrPacket

log = logging.getLogger(__name__)

_PACKET_COUNT = "_RTCRtpSender__packet_count"


class QuietReports:
    """The wrapper of one sender's `_send_rtcp`."""

    def __init__(self, sender: RTCRtpSender, send: Callable[[list[Any]], Awaitable[None]]) -> None:
        self._sender = sender
        self._send = send
        # The sender's packet count at the last two reports sent (oldest first).
        self._counts = (0, 0)
        self.skipped = 0

    async def __call__(self, packets: list[Any]) -> None:
        if any(isinstance(p, RtcpSrPacket) for p in packets):
            count = getattr(self._sender, _PACKET_COUNT)
            if count == self._counts[0]:
                self.skipped += 1
                return
            self._counts = (self._counts[1], count)
        await self._send(packets)


def install(sender: RTCRtpSender) -> bool:
    if not hasattr(sender, "_send_rtcp") or not hasattr(sender, _PACKET_COUNT):
        log.warning("not the RTCRtpSender this was written for: it reports whether or not it sends")
        return False
    sender._send_rtcp = QuietReports(sender, sender._send_rtcp)  # type: ignore[method-assign]
    return True
