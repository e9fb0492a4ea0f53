"""aiortc's RTCP routing (RtpRouter.route_rtcp), the same decisions without its per-call cost.

Why: every RTCP packet a viewer sends (receiver reports, REMB, NACKs, PLIs: several a second
per viewer) goes through `RtpRouter.route_rtcp`. In aiortc 1.16 that method defines a nested
helper whose annotation, `Optional[Union[RtpReceiver, RtpSender]]`, the interpreter evaluates
through typing's cache on every call (aiortc's modules do not postpone annotations). On the
bench machine that was about a twentieth of what each extra viewer cost the publisher, more
than parsing and handling the packets. `install()` puts `route_rtcp` below in its place on
the class, for every peer connection in the process.

It routes exactly as aiortc does; tests/publisher/test_aiortc_rtcp_router.py compares the two on
every kind of RTCP packet. `install()` refuses (aiortc's own stays) for an aiortc version it
was not checked against.
"""

from __future__ import annotations

import logging
from typing import Any

import aiortc
from aiortc import rtp
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import RtcpByePacket, RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, RtcpSrPacket

log = logging.getLogger(__name__)

CHECKED_AIORTC = ("1.16",)  # major.minor versions whose RtpRouter.route_rtcp this mirrors
AIORTC_ROUTE_RTCP = RtpRouter.route_rtcp


def route_rtcp(self: RtpRouter, packet: Any) -> set[Any]:
    recipients: set[Any] = set()
    # to the RTP receiver
    if isinstance(packet, RtcpSrPacket):
        recipients.add(self.ssrc_table.get(packet.ssrc))
    elif isinstance(packet, RtcpByePacket):
        for source in packet.sources:
            recipients.add(self.ssrc_table.get(source))
    # to the RTP sender
    if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
        senders = self.senders
        for report in packet.reports:
            recipients.add(senders.get(report.ssrc))
    elif isinstance(packet, (RtcpPsfbPacket, RtcpRtpfbPacket)):
        recipients.add(self.senders.get(packet.media_ssrc))
        # a REMB's media SSRC is always 0: its own SSRCs are in the FCI
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == rtp.RTCP_PSFB_APP:
            try:
                for ssrc in rtp.unpack_remb_fci(packet.fci)[1]:
                    recipients.add(self.senders.get(ssrc))
            except ValueError:
                pass
    recipients.discard(None)
    return recipients


def install() -> bool:
    """Route RTCP with `route_rtcp` (idempotent); False, and aiortc's own stays, for an aiortc
    this was not checked against."""
    if RtpRouter.route_rtcp is route_rtcp:
        return True
    if ".".join(aiortc.__version__.split(".")[:2]) not in CHECKED_AIORTC:
        log.warning(
            "aiortc %s: not the RtpRouter this was written for; its own RTCP routing runs", aiortc.__version__
        )
        return False
    RtpRouter.route_rtcp = route_rtcp  # type: ignore[method-assign]
    return True
