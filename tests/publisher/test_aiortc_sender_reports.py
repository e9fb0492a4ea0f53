"""aiortc_sender_reports: a sender report only from a sender that sent RTP since the report
before the last (RFC 3550 6.4); BYEs and other RTCP pass."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtp import RtcpByePacket, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from appliance.publisher import aiortc_sender_reports
from appliance.publisher.aiortc_sender_reports import QuietReports

from .test_packettrack import Track


def report() -> list[Any]:
    return [
        RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(0, 0, 0, 0)),
        RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=1, items=[(1, b"cname")])]),
    ]


async def test_reports_follow_what_was_sent() -> None:
    sender = SimpleNamespace(_RTCRtpSender__packet_count=0)
    sent: list[list[Any]] = []

    async def send(packets: list[Any]) -> None:
        sent.append(packets)

    quiet = QuietReports(sender, send)  # type: ignore[arg-type]
    timeline = []
    for count in (0, 0, 5, 9, 9, 9, 9, 12, 12, 12):  # the sender's packet count at each report
        sender._RTCRtpSender__packet_count = count
        before = len(sent)
        await quiet(report())
        timeline.append(len(sent) > before)
    # silent: none; sending: every one; stopped: one more, then none; again: every one, one more.
    assert timeline == [False, False, True, True, True, False, False, True, True, False]
    assert quiet.skipped == 5
    await quiet([RtcpByePacket(sources=[1])])  # a BYE goes out whatever was sent
    assert isinstance(sent[-1][0], RtcpByePacket)


async def test_installed_on_a_real_sender() -> None:
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver(Track(), direction="sendonly").sender
        assert aiortc_sender_reports.install(sender)
        assert isinstance(sender._send_rtcp, QuietReports)
        assert sender._RTCRtpSender__packet_count == 0  # the attribute it reads is aiortc's
    finally:
        await pc.close()
