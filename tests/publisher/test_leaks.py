"""50 viewers joining and leaving leave the publisher as they found it: fds, memory, threads, tasks."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender

from appliance.publisher import channels
from appliance.publisher.audio import OpusTrack
from appliance.publisher.peer import ViewerPeer
from appliance.publisher.video import PassthroughTrack

from .conftest import Camera, Publisher
from .helpers import fd_count, rss_bytes, wait_until
from .room import RoomServer
from .viewer import AiortcViewer

log = logging.getLogger(__name__)


async def one_call(room: RoomServer, pub: Publisher) -> None:
    viewer = AiortcViewer(room.url)
    try:
        await viewer.connect()
        await viewer.wait_for(lambda: viewer.got.video and viewer.events_channel, "a first frame", 15)
        viewer.send_event(channels.Listen(on=True))  # the microphone opens and closes each call
        await viewer.wait_for(lambda: viewer.got.audio_frames >= 1, "the kiosk's sound", 15)
    finally:
        await viewer.close()
    await wait_until(lambda: not pub.call.viewers and pub.call.tasks == 0, "the call cleaned up", 10)


_libc = ctypes.CDLL(None)


def snapshot() -> tuple[int, int, int, int]:
    gc.collect()
    # Hand freed heap back to the system first: glibc keeps per-thread arenas (aiortc decodes
    # in threads) whose free space would otherwise read as growth.
    _libc.malloc_trim(0)
    return fd_count(), rss_bytes(), threading.active_count(), len(asyncio.all_tasks())


CALL_OBJECTS = (
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpReceiver,
    RTCDataChannel,
    ViewerPeer,
    PassthroughTrack,
    OpusTrack,
)


def live_call_objects() -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, CALL_OBJECTS))


async def test_fifty_joins_and_leaves_leak_nothing(
    camera: Camera, start_publisher: Callable[..., Awaitable[Publisher]], room: RoomServer
) -> None:
    pub = await start_publisher()
    # Warm up: codecs, caches and pools made on first use, and the allocator's arenas (RSS
    # settles after some 20 calls here, then stays within a few MiB however many follow).
    for _ in range(15):
        await one_call(room, pub)
    await asyncio.sleep(0.5)
    fds0, rss0, threads0, tasks0 = snapshot()
    for _ in range(50):
        await one_call(room, pub)
    await asyncio.sleep(0.5)
    fds1, rss1, threads1, tasks1 = snapshot()
    log.info(
        "fds %d -> %d, rss %.1f -> %.1f MiB, threads %d -> %d, tasks %d -> %d",
        *(fds0, fds1, rss0 / 2**20, rss1 / 2**20, threads0, threads1, tasks0, tasks1),
    )
    assert fds1 <= fds0, f"file descriptors grew from {fds0} to {fds1}"
    assert threads1 <= threads0, f"threads grew from {threads0} to {threads1}"
    assert tasks1 <= tasks0, f"asyncio tasks grew from {tasks0} to {tasks1}"
    # Nothing of any call is still alive: peers, senders, receivers, channels, tracks (the
    # test's viewers included, which run in this process too).
    assert live_call_objects() == Counter()
    # Memory, coarsely: this process also runs the viewers and their decoders, so allocator
    # settling reads a few MiB here (test_daemon.py measures the publisher process alone).
    assert rss1 - rss0 < 16 * 2**20, f"memory grew by {(rss1 - rss0) / 2**20:.1f} MiB"
    # And the parts hold nothing for calls that ended.
    feed = pub.service.feed
    assert feed is not None and feed.tracks == 0
    assert not pub.service.audio.capturing and not pub.service.audio._tracks
    assert room.offers_relayed == 65
    assert pub.service.audio.sessions == 65  # every call really went through the room service


async def one_failed_call(room: RoomServer, pub: Publisher) -> None:
    """A viewer whose browser dies mid-call (its connection closes without a word on the
    signaling), then one that never answers the offer: both end on the publisher's side."""
    gone = AiortcViewer(room.url)
    try:
        await gone.connect()
        await gone.wait_for(lambda: len(gone.got.video) >= 1 and gone.events_channel, "a first frame", 15)
        assert gone.pc is not None
        await gone.pc.close()
        await wait_until(lambda: not pub.call.viewers, "the failed peer dropped", 10)
    finally:
        await gone.close()
    silent = AiortcViewer(room.url, answer=False)
    try:
        await silent.connect()
        await silent.wait_for(lambda: silent.offers == 1, "the offer", 10)
        await wait_until(lambda: not pub.call.viewers, "the unanswered call dropped", 10)
    finally:
        await silent.close()
    await wait_until(lambda: pub.call.tasks == 0, "the calls cleaned up", 10)


async def test_calls_that_fail_or_are_never_answered_leak_nothing(
    camera: Camera,
    start_publisher: Callable[..., Awaitable[Publisher]],
    room: RoomServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from appliance.publisher import call as call_module

    monkeypatch.setattr(call_module, "ANSWER_TIMEOUT_S", 0.5)
    pub = await start_publisher()
    for _ in range(5):  # warm up, as above
        await one_failed_call(room, pub)
    await asyncio.sleep(0.5)
    fds0, _, threads0, tasks0 = snapshot()
    for _ in range(15):
        await one_failed_call(room, pub)
    await asyncio.sleep(0.5)
    fds1, _, threads1, tasks1 = snapshot()
    assert fds1 <= fds0, f"file descriptors grew from {fds0} to {fds1}"
    assert threads1 <= threads0, f"threads grew from {threads0} to {threads1}"
    assert tasks1 <= tasks0, f"asyncio tasks grew from {tasks0} to {tasks1}"
    assert live_call_objects() == Counter()
    feed = pub.service.feed
    assert feed is not None and feed.tracks == 0
    assert room.offers_relayed == 40
