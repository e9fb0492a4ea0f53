"""aiortc_rtcp_router.route_rtcp routes every kind of RTCP packet as aiortc's own does."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import rtp
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from appliance.publisher import aiortc_rtcp_router
from appliance.publisher.aiortc_rtcp_router import AIORTC_ROUTE_RTCP, route_rtcp

SENDERS = {1001: "video sender", 1002: "audio sender"}
RECEIVERS = {2001: "audio receiver", 2002: "video receiver"}


def report(ssrc: int) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(ssrc, 0, 0, 100, 3, 0, 0)


def sender_info() -> RtcpSenderInfo:
    return RtcpSenderInfo(ntp_timestamp=1 << 40, rtp_timestamp=9000, packet_count=10, octet_count=1000)


PACKETS: dict[str, Any] = {
    "sr from a receiver's source, reporting on our senders": RtcpSrPacket(
        2001, sender_info(), [report(1001), report(1002)]
    ),
    "sr from an unknown source": RtcpSrPacket(9, sender_info(), [report(1001), report(77)]),
    "rr on one sender and an unknown one": RtcpRrPacket(2002, [report(1002), report(55)]),
    "rr with no reports": RtcpRrPacket(2002, []),
    "bye": RtcpByePacket([2001, 2002, 3]),
    "pli": RtcpPsfbPacket(fmt=rtp.RTCP_PSFB_PLI, ssrc=2002, media_ssrc=1001),
    "pli for nobody": RtcpPsfbPacket(fmt=rtp.RTCP_PSFB_PLI, ssrc=2002, media_ssrc=4),
    "remb": RtcpPsfbPacket(
        fmt=rtp.RTCP_PSFB_APP, ssrc=2002, media_ssrc=0, fci=rtp.pack_remb_fci(500_000, [1001, 1002, 8])
    ),
    "app feedback that is no remb": RtcpPsfbPacket(
        fmt=rtp.RTCP_PSFB_APP, ssrc=2002, media_ssrc=0, fci=b"junk"
    ),
    "nack": RtcpRtpfbPacket(fmt=rtp.RTCP_RTPFB_NACK, ssrc=2002, media_ssrc=1002, lost=[5, 6]),
    "sdes": RtcpSdesPacket([RtcpSourceInfo(ssrc=2001, items=[(1, b"cname")])]),
}


@pytest.fixture
def router() -> RtpRouter:
    router = RtpRouter()
    for ssrc, sender in SENDERS.items():
        router.register_sender(sender, ssrc)  # type: ignore[arg-type]
    for ssrc, receiver in RECEIVERS.items():
        router.register_receiver(receiver, [ssrc], [96])  # type: ignore[arg-type]
    return router


@pytest.mark.parametrize("kind", list(PACKETS))
def test_routes_as_aiortc(router: RtpRouter, kind: str) -> None:
    packet = PACKETS[kind]
    assert route_rtcp(router, packet) == AIORTC_ROUTE_RTCP(router, packet)


def test_the_cases_reach_every_kind_of_recipient(router: RtpRouter) -> None:
    # The comparison above means something only if the cases route somewhere, to both sides.
    routed = set().union(*(route_rtcp(router, p) for p in PACKETS.values()))
    assert routed == set(SENDERS.values()) | set(RECEIVERS.values())


def test_install_puts_it_in_place_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RtpRouter, "route_rtcp", AIORTC_ROUTE_RTCP)  # as imported; put back after
    assert aiortc_rtcp_router.install() and aiortc_rtcp_router.install()
    assert RtpRouter.route_rtcp is route_rtcp  # type: ignore[comparison-overlap]


def test_another_aiortc_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RtpRouter, "route_rtcp", AIORTC_ROUTE_RTCP)
    monkeypatch.setattr(aiortc_rtcp_router.aiortc, "__version__", "9.0.0")
    assert not aiortc_rtcp_router.install()
    assert RtpRouter.route_rtcp is AIORTC_ROUTE_RTCP
