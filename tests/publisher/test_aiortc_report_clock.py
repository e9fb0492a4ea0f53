"""aiortc_report_clock: RTCP report timers that wake on the camera's frames. FrameClock's sleep
ends at the first frame after its deadline (or on a fallback timer without frames), the reports
are aiortc's byte for byte, and over a real connection they still reach the viewer."""

from __future__ import annotations

import asyncio
from functools import partial
from types import SimpleNamespace
from typing import Any

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtp import RtcpByePacket, RtcpRrPacket, RtpPacket

from appliance.publisher import aiortc_report_clock as clock_module
from appliance.publisher.aiortc_report_clock import (
    SLACK_S,
    FrameClock,
    install_receiver,
    install_sender,
    receiver_report,
    sender_report,
)
from appliance.publisher.aiortc_sender_reports import QuietReports

from .conftest import Camera, Publisher
from .helpers import wait_until
from .room import RoomServer
from .viewer import AiortcViewer, Tone

# --- FrameClock -----------------------------------------------------------------------------------


class Ticker:
    """A camera: tick() every `period` seconds until stopped."""

    def __init__(self, clock: FrameClock, period: float = 1 / 30) -> None:
        self.clock = clock
        self.ticks: list[float] = []
        self._task = asyncio.ensure_future(self._run(period))

    async def _run(self, period: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            self.ticks.append(loop.time())
            self.clock.tick()

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_sleep_does_not_end_before_its_deadline_even_with_ticks() -> None:
    clock = FrameClock()
    loop = asyncio.get_running_loop()
    ticker = Ticker(clock, 0.005)
    try:
        start = loop.time()
        await clock.sleep(0.2)
        assert loop.time() - start >= 0.2
        assert sum(1 for t in ticker.ticks if t - start < 0.2) >= 5  # ticks came before, in vain
    finally:
        await ticker.stop()


async def test_a_sleep_ends_at_the_first_tick_after_its_deadline() -> None:
    clock = FrameClock()
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.ensure_future(clock.sleep(0.05))
    await asyncio.sleep(0.01)
    clock.tick()  # before the deadline: nothing
    await asyncio.sleep(0)
    assert not task.done()
    await asyncio.sleep(0.06)  # past the deadline, well before the fallback
    assert not task.done()
    clock.tick()
    await asyncio.sleep(0)
    assert task.done()
    assert loop.time() - start < 0.05 + SLACK_S  # the tick, not the fallback


async def test_with_frames_a_sleep_ends_on_a_frame() -> None:
    clock = FrameClock()
    loop = asyncio.get_running_loop()
    ticker = Ticker(clock, 1 / 30)
    try:
        for delay in (0.05, 0.12, 0.2):
            start = loop.time()
            await clock.sleep(delay)
            # Woken by the first frame after its deadline, long before the fallback.
            assert ticker.ticks[-1] >= start + delay
            assert loop.time() - start < delay + SLACK_S
    finally:
        await ticker.stop()


async def test_without_ticks_the_fallback_ends_it() -> None:
    clock = FrameClock()
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(1.0):
        await clock.sleep(0.02)
    assert 0.02 + SLACK_S - 0.005 <= loop.time() - start < 0.02 + SLACK_S + 0.2
    assert not clock._heap  # its entry went with it


async def test_cancelling_a_sleeper_cancels_its_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrameClock()
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def spy(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        handle = call_at(*args, **kwargs)
        timers.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_at", spy)
    task = asyncio.ensure_future(clock.sleep(0.01))
    await asyncio.sleep(0)
    assert len(timers) == 1 and not timers[0].cancelled()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert timers[0].cancelled()
    await asyncio.sleep(0.02)
    clock.tick()  # the cancelled sleeper's entry is skipped
    assert not clock._heap
    other = asyncio.ensure_future(clock.sleep(0))
    await asyncio.sleep(0)
    clock.tick()
    await asyncio.sleep(0)
    assert other.done() and not other.cancelled()


async def test_many_sleepers_wake_in_deadline_order() -> None:
    clock = FrameClock()
    woke: list[int] = []

    async def sleeper(i: int, delay: float) -> None:
        await clock.sleep(delay)
        woke.append(i)

    delays = [0.04, 0.01, 0.03, 0.0, 0.02, 0.05]
    tasks = [asyncio.ensure_future(sleeper(i, d)) for i, d in enumerate(delays)]
    await asyncio.sleep(0.06)
    clock.tick()  # all due at once: resolved in deadline order
    await asyncio.gather(*tasks)
    assert woke == sorted(range(len(delays)), key=lambda i: delays[i])
    assert not clock._heap


async def test_a_tick_with_nothing_due_leaves_the_sleepers() -> None:
    clock = FrameClock()
    tasks = [asyncio.ensure_future(clock.sleep(0.5)) for _ in range(3)]
    await asyncio.sleep(0)
    for _ in range(10):
        clock.tick()
    await asyncio.sleep(0)
    assert not any(t.done() for t in tasks) and len(clock._heap) == 3
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- what it relies on ----------------------------------------------------------------------------


async def test_this_aiortc_has_what_it_relies_on() -> None:
    assert clock_module.aiortc_checked(), "a new aiortc: check _run_rtcp against this module"
    pc = RTCPeerConnection()
    try:
        camera = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        mic = pc.addTransceiver("audio", direction="sendrecv")
        clock = FrameClock()
        assert install_sender(camera.sender, clock)
        assert install_receiver(mic.receiver, clock)
        assert isinstance(camera.sender._run_rtcp, partial)
        assert isinstance(mic.receiver._run_rtcp, partial)
    finally:
        await pc.close()


async def test_another_aiortc_or_object_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    pc = RTCPeerConnection()
    try:
        t = pc.addTransceiver(VideoStreamTrack(), direction="sendrecv")
        assert not install_sender(SimpleNamespace(_ssrc=1), FrameClock())  # type: ignore[arg-type]
        assert not install_receiver(SimpleNamespace(), FrameClock())  # type: ignore[arg-type]
        monkeypatch.setattr(clock_module.aiortc, "__version__", "9.0.0")
        assert not install_sender(t.sender, FrameClock())
        assert not install_receiver(t.receiver, FrameClock())
        assert "_run_rtcp" not in vars(t.sender) and "_run_rtcp" not in vars(t.receiver)
    finally:
        await pc.close()


# --- the reports are aiortc's ---------------------------------------------------------------------


class FixedTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def sender_with_state(pc: RTCPeerConnection) -> RTCRtpSender:
    sender = pc.addTransceiver(VideoStreamTrack(), direction="sendonly").sender
    s: Any = sender
    s._RTCRtpSender__cname = "kiosk-cname"
    s._RTCRtpSender__ntp_timestamp = 0xE8F0_1234_5678_9ABC
    s._RTCRtpSender__rtp_timestamp = 0x1234_5678
    s._RTCRtpSender__packet_count = (1 << 32) + 77  # wraps in the report
    s._RTCRtpSender__octet_count = (1 << 33) + 99_000
    return sender


async def aiortcs_run(run: Any, sent: list[bytes]) -> None:
    """aiortc's own _run_rtcp with no wait between reports (random() - 0.5 -> sleep(0)): one
    report, then stopped as stop() does."""
    task = asyncio.ensure_future(run())
    await wait_until(lambda: len(sent) >= 1, "aiortc's report", 2)
    task.cancel()
    await task


async def test_the_sender_report_and_bye_are_aiortcs(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = FixedTime(1_700_000_000.25)
    monkeypatch.setattr(aiortc.rtcrtpsender, "time", fixed)
    monkeypatch.setattr(clock_module, "time", fixed)
    no_wait = SimpleNamespace(random=lambda: -0.5)
    monkeypatch.setattr(aiortc.rtcrtpsender, "random", no_wait)
    monkeypatch.setattr(clock_module, "random", no_wait)
    pc = RTCPeerConnection()
    try:
        theirs, ours = sender_with_state(pc), sender_with_state(pc)
        ours._ssrc = theirs._ssrc
        theirs_sent: list[bytes] = []
        ours_sent: list[bytes] = []

        async def send_theirs(packets: list[Any]) -> None:
            theirs_sent.append(b"".join(bytes(p) for p in packets))

        async def send_ours(packets: list[Any]) -> None:
            ours_sent.append(b"".join(bytes(p) for p in packets))

        theirs._send_rtcp = send_theirs  # type: ignore[method-assign]
        ours._send_rtcp = send_ours  # type: ignore[method-assign]
        await aiortcs_run(partial(RTCRtpSender._run_rtcp, theirs), theirs_sent)
        assert len(theirs_sent) >= 2  # the reports, and the BYE

        built = sender_report(ours)
        assert b"".join(bytes(p) for p in built) == theirs_sent[0]
        for name in ("lsr", "lsr_time"):
            assert getattr(ours, f"_RTCRtpSender__{name}") == getattr(theirs, f"_RTCRtpSender__{name}"), name

        # Our loop: a report per tick-ended sleep, through the instance's _send_rtcp, the BYE at
        # the end, and the events stop() waits on.
        clock = FrameClock()
        assert install_sender(ours, clock)
        task = asyncio.ensure_future(ours._run_rtcp())
        await asyncio.sleep(0)
        assert ours._RTCRtpSender__rtcp_started.is_set()  # type: ignore[attr-defined]
        clock.tick()  # sleep(0): due at once
        await wait_until(lambda: len(ours_sent) == 1, "our report", 2)
        task.cancel()
        await task
        assert ours._RTCRtpSender__rtcp_exited.is_set()  # type: ignore[attr-defined]
        assert len(ours_sent) >= 2 and ours_sent[0] == theirs_sent[0]
        assert ours_sent[-1] == theirs_sent[-1] == bytes(RtcpByePacket(sources=[ours._ssrc]))
    finally:
        await pc.close()


def receiver_with_streams(pc: RTCPeerConnection, fixed: FixedTime) -> RTCRtpReceiver:
    receiver = pc.addTransceiver("audio", direction="recvonly").receiver
    r: Any = receiver
    r._set_rtcp_ssrc(0x0BADCAFE)
    streams = r._RTCRtpReceiver__remote_streams
    for ssrc, seqs in ((1111, [10, 11, 13, 14, 17]), (2222, [65534, 65535, 0, 1])):
        stats = aiortc.rtcrtpreceiver.StreamStatistics(48000)
        for i, seq in enumerate(seqs):
            fixed.now = 1_700_000_000.0 + i * 0.021
            stats.add(RtpPacket(payload_type=111, sequence_number=seq, timestamp=960 * i, ssrc=ssrc))
        streams[ssrc] = stats
    r._RTCRtpReceiver__lsr[1111] = 0x1234_5678
    r._RTCRtpReceiver__lsr_time[1111] = 1_700_000_000.0
    return receiver


async def test_the_receiver_report_is_aiortcs(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = FixedTime(0.0)
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "time", fixed)
    monkeypatch.setattr(clock_module, "time", fixed)
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "random", SimpleNamespace(random=lambda: -0.5))
    pc = RTCPeerConnection()
    try:
        theirs, ours = receiver_with_streams(pc, fixed), receiver_with_streams(pc, fixed)
        fixed.now = 1_700_000_000.75
        theirs_sent: list[bytes] = []

        async def send_theirs(packet: Any) -> None:
            theirs_sent.append(bytes(packet))

        theirs._send_rtcp = send_theirs  # type: ignore[method-assign]
        await aiortcs_run(partial(RTCRtpReceiver._run_rtcp, theirs), theirs_sent)
        built = receiver_report(ours)
        assert built is not None and bytes(built) == theirs_sent[0]
        # the fraction lost is counted from the report before, as in aiortc
        theirs_second = receiver_report(theirs)
        ours_second = receiver_report(ours)
        assert theirs_second is not None and ours_second is not None
        assert bytes(ours_second) == bytes(theirs_second)

        # No remote stream, or no RTCP SSRC yet: no report.
        empty = pc.addTransceiver("audio", direction="recvonly").receiver
        assert receiver_report(empty) is None
    finally:
        await pc.close()


async def test_the_receiver_loop_reports_on_ticks_and_ends_as_aiortcs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clock_module, "random", SimpleNamespace(random=lambda: -0.5))
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        r: Any = receiver
        r._set_rtcp_ssrc(5)
        r._RTCRtpReceiver__remote_streams[7] = aiortc.rtcrtpreceiver.StreamStatistics(48000)
        r._RTCRtpReceiver__remote_streams[7].add(RtpPacket(sequence_number=1, ssrc=7))
        sent: list[Any] = []

        async def send(packet: Any) -> None:
            sent.append(packet)

        receiver._send_rtcp = send  # type: ignore[method-assign]
        clock = FrameClock()
        assert install_receiver(receiver, clock)
        task = asyncio.ensure_future(receiver._run_rtcp())
        await asyncio.sleep(0)
        assert r._RTCRtpReceiver__rtcp_started.is_set()
        clock.tick()  # sleep(0): due at once
        await wait_until(lambda: len(sent) == 1, "a receiver report", 2)
        assert sent[0].ssrc == 5 and [x.ssrc for x in sent[0].reports] == [7]
        task.cancel()
        await task
        assert r._RTCRtpReceiver__rtcp_exited.is_set()
        assert all(isinstance(p, RtcpRrPacket) for p in sent)  # no BYE from a receiver
    finally:
        await pc.close()


# --- over a real connection -----------------------------------------------------------------------


def camera_sender(pub: Publisher, viewer: AiortcViewer) -> RTCRtpSender:
    peer = pub.call.viewers[viewer.peer_id].peer
    return next(s for s in peer.pc.getSenders() if s.kind == "video")


async def test_with_frames_the_viewer_gets_the_cameras_sender_reports(
    camera: Camera, start_publisher: Any, room: RoomServer
) -> None:
    pub = await start_publisher()
    viewer = AiortcViewer(room.url)
    try:
        await viewer.connect()
        await viewer.wait_for(lambda: len(viewer.got.video) >= 5, "video frames", 15)
        sender = camera_sender(pub, viewer)
        run = sender._run_rtcp
        assert isinstance(run, partial) and run.func is clock_module._run_sender_rtcp
        assert run.args[1] is pub.service.feed.report_clock
        assert viewer.video_receiver is not None
        lsr = viewer.video_receiver._RTCRtpReceiver__lsr  # type: ignore[attr-defined]
        await viewer.wait_for(lambda: sender._ssrc in lsr, "a sender report for the camera", 5)
        assert lsr[sender._ssrc] == sender._RTCRtpSender__lsr  # type: ignore[attr-defined]
    finally:
        await viewer.close()


async def test_without_frames_the_fallback_still_reports(start_publisher: Any, room: RoomServer) -> None:
    # No camera at all: nothing ticks the clock.
    pub = await start_publisher()
    viewer = AiortcViewer(room.url, talk=Tone())
    try:
        await viewer.connect()
        await wait_until(lambda: viewer.peer_id in pub.call.viewers, "the viewer's peer", 10)
        sender = camera_sender(pub, viewer)
        assert isinstance(sender._send_rtcp, QuietReports)
        assert (
            isinstance(sender._run_rtcp, partial) and sender._run_rtcp.func is clock_module._run_sender_rtcp
        )
        # The camera sender's reports are made (and, no RTP sent, dropped by QuietReports).
        await wait_until(lambda: sender._send_rtcp.skipped >= 2, "the camera's idle reports", 10)
        # The publisher's receiver reports on the viewer's microphone reach the viewer.
        assert viewer.pc is not None
        talk = next(s for s in viewer.pc.getSenders() if s.kind == "audio")

        async def reported() -> bool:
            return any(s.type == "remote-inbound-rtp" for s in (await talk.getStats()).values())

        for _ in range(100):
            if await reported():
                break
            await asyncio.sleep(0.1)
        assert await reported(), "no receiver report from the publisher"
        assert pub.service.feed.units == 0
    finally:
        await viewer.close()
