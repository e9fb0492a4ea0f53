"""aiortc's RTCP report timers, woken by the camera's frames instead of timers of their own.

Why: every viewer has an RTCRtpSender for the camera, one for the kiosk microphone (silent
until the viewer unmutes: aiortc_sender_reports drops its empty reports, but its timer still
wakes), and an RTCRtpReceiver for the viewer's microphone (and one for its camera with
publisher.remote_video). aiortc runs a `_run_rtcp` task for each, which sleeps
`0.5 + random.random()` seconds with asyncio.sleep and then builds and sends a report. So every
viewer added about three event-loop wake-ups a second at moments of their own, and each sender
report sent on its own is a lone datagram that also wakes the receiving machine. On the bench
VM those ticks cost about 0.3 ms of CPU a second per viewer (the loop's wake-up ~55 us, the
sleep's future ~40 us, the report ~150 us).

The camera's access units already wake the loop ~30 times a second (video.CameraFeed.feed).
`FrameClock.sleep(delay)` ends at the first `tick()` at or after its deadline, and CameraFeed
ticks once per access unit, after the frame went to the tracks: the reports due then go out in
the same pass, right behind the frame's RTP packets, while everything involved is awake anyway.
A report is then up to one frame interval (~33 ms) later than its random deadline, well within
what RFC 3550's randomised interval is for. Without frames (camera down) a fallback timer ends
each sleep SLACK_S after its deadline, so reports never stop.

`install_sender()` / `install_receiver()` put a `_run_rtcp` on one sender / receiver (an instance
attribute shadowing the method, as aiortc_sender_loop.install does with `_run_rtp`), before its
transceiver starts. It is aiortc 1.16's RTCRtpSender._run_rtcp / RTCRtpReceiver._run_rtcp:
the same packets (`sender_report`, `receiver_report`, compared byte for byte with aiortc's own by
tests/publisher/test_aiortc_report_clock.py), the same state updates, the sender's BYE at the
end, the started/exited events stop() waits on; only the wait differs. The sender's reports go
through the instance's `_send_rtcp` (which aiortc_sender_reports wraps).

The private parts it relies on: RTCRtpSender's and RTCRtpReceiver's name-mangled attributes in
SENDER_ATTRIBUTES / RECEIVER_ATTRIBUTES, their `_send_rtcp`, and the sender's `_ssrc`. The
installs refuse (aiortc's own loop then runs, as before) for an aiortc major.minor not in
CHECKED_AIORTC or an object without those attributes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from functools import partial
from typing import Any

import aiortc
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

log = logging.getLogger(__name__)

CHECKED_AIORTC = ("1.16",)  # major.minor versions whose _run_rtcp methods these mirror
SLACK_S = 0.1  # without ticks, a sleep ends this long after its deadline

_SENDER = "_RTCRtpSender__"
SENDER_ATTRIBUTES = (
    "rtcp_started",
    "rtcp_exited",
    "ntp_timestamp",
    "rtp_timestamp",
    "packet_count",
    "octet_count",
    "lsr",
    "lsr_time",
    "cname",
    "log_debug",
)
_RECEIVER = "_RTCRtpReceiver__"
RECEIVER_ATTRIBUTES = (
    "rtcp_started",
    "rtcp_exited",
    "remote_streams",
    "lsr",
    "lsr_time",
    "rtcp_ssrc",
    "log_debug",
)


class FrameClock:
    """Sleeps that end on the camera's frames: `tick()` once per frame, on the event loop."""

    def __init__(self) -> None:
        # (deadline in loop time, order of arrival, the sleeper's future), earliest first. A
        # cancelled or fallen-back sleeper's entry stays until it comes up, then is skipped.
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, delay: float) -> None:
        """Until the first tick at or after loop.time() + delay (or deadline + SLACK_S)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        waiter: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (deadline, next(self._order), waiter))
        fallback = loop.call_at(deadline + SLACK_S, self._fallback, waiter)
        try:
            await waiter
        finally:
            fallback.cancel()

    def tick(self) -> None:
        """Wake every sleeper whose deadline has passed (cheap when none has)."""
        heap = self._heap
        if not heap:
            return
        now = heap[0][2].get_loop().time()
        while heap and heap[0][0] <= now:
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():
                waiter.set_result(None)

    def _fallback(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_result(None)
        # Without ticks nothing else empties the heap: drop what has ended from its top (every
        # entry below a live one has a fallback of its own still to come, or was cancelled).
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)


def aiortc_checked() -> bool:
    return ".".join(aiortc.__version__.split(".")[:2]) in CHECKED_AIORTC


def _refused(obj: Any, prefix: str, names: tuple[str, ...], *extra: str) -> bool:
    missing = [n for n in names if not hasattr(obj, prefix + n)] + [n for n in extra if not hasattr(obj, n)]
    if aiortc_checked() and not missing:
        return False
    log.warning(
        "aiortc %s: not the %s these RTCP reports were written for (missing: %s); its own timer runs",
        aiortc.__version__,
        type(obj).__name__,
        ", ".join(missing) or "-",
    )
    return True


def install_sender(sender: RTCRtpSender, clock: FrameClock) -> bool:
    """Report on `clock`'s ticks instead of a timer of its own (before the sender starts)."""
    if _refused(sender, _SENDER, SENDER_ATTRIBUTES, "_ssrc", "_send_rtcp"):
        return False
    sender._run_rtcp = partial(_run_sender_rtcp, sender, clock)  # type: ignore[method-assign]
    return True


def install_receiver(receiver: RTCRtpReceiver, clock: FrameClock) -> bool:
    """Report on `clock`'s ticks instead of a timer of its own (before the receiver starts)."""
    if _refused(receiver, _RECEIVER, RECEIVER_ATTRIBUTES, "_send_rtcp"):
        return False
    receiver._run_rtcp = partial(_run_receiver_rtcp, receiver, clock)  # type: ignore[method-assign]
    return True


# --- aiortc 1.16's loops, waiting on the clock ------------------------------------------------------
# (The name-mangled attributes, spelt out: outside their class they are plain names.)


def sender_report(sender: Any) -> list[AnyRtcpPacket]:
    """The SR (and SDES) aiortc's RTCRtpSender._run_rtcp sends, with its __lsr updates."""
    ntp_timestamp = sender._RTCRtpSender__ntp_timestamp
    packets: list[AnyRtcpPacket] = [
        RtcpSrPacket(
            ssrc=sender._ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp_timestamp,
                rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
                packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,
                octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF,
            ),
        )
    ]
    sender._RTCRtpSender__lsr = (ntp_timestamp >> 16) & 0xFFFFFFFF
    sender._RTCRtpSender__lsr_time = time.time()
    cname = sender._RTCRtpSender__cname
    if cname is not None:
        packets.append(
            RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode("utf8"))])])
        )
    return packets


async def _run_sender_rtcp(sender: Any, clock: FrameClock) -> None:
    sender._RTCRtpSender__log_debug("- RTCP started")
    sender._RTCRtpSender__rtcp_started.set()

    try:
        while True:
            # As aiortc: 0.5-1.5 times the interval; ended by the frame after it.
            await clock.sleep(0.5 + random.random())
            await sender._send_rtcp(sender_report(sender))
    except asyncio.CancelledError:
        pass

    await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])

    sender._RTCRtpSender__log_debug("- RTCP finished")
    sender._RTCRtpSender__rtcp_exited.set()


def receiver_report(receiver: Any) -> RtcpRrPacket | None:
    """The RR aiortc's RTCRtpReceiver._run_rtcp sends, None where it sends nothing. (Reading a
    stream's fraction_lost moves its interval on, as in aiortc: built, it counts as sent.)"""
    lsrs = receiver._RTCRtpReceiver__lsr
    lsr_times = receiver._RTCRtpReceiver__lsr_time
    reports = []
    for ssrc, stream in receiver._RTCRtpReceiver__remote_streams.items():
        lsr = 0
        dlsr = 0
        if ssrc in lsrs:
            lsr = lsrs[ssrc]
            delay = time.time() - lsr_times[ssrc]
            if delay > 0 and delay < 65536:
                dlsr = int(delay * 65536)
        reports.append(
            RtcpReceiverInfo(
                ssrc=ssrc,
                fraction_lost=stream.fraction_lost,
                packets_lost=stream.packets_lost,
                highest_sequence=stream.max_seq,
                jitter=stream.jitter,
                lsr=lsr,
                dlsr=dlsr,
            )
        )
    rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
    if rtcp_ssrc is not None and reports:
        return RtcpRrPacket(ssrc=rtcp_ssrc, reports=reports)
    return None


async def _run_receiver_rtcp(receiver: Any, clock: FrameClock) -> None:
    receiver._RTCRtpReceiver__log_debug("- RTCP started")
    receiver._RTCRtpReceiver__rtcp_started.set()

    try:
        while True:
            await clock.sleep(0.5 + random.random())
            packet = receiver_report(receiver)
            if packet is not None:
                await receiver._send_rtcp(packet)
    except asyncio.CancelledError:
        pass

    receiver._RTCRtpReceiver__log_debug("- RTCP finished")
    receiver._RTCRtpReceiver__rtcp_exited.set()
