"""PacketTrack's two ways out: pulled by recv(), or pushed into a waiting sender's sink within
the feed's own call; a sink that releases the track gets its packets queued again."""

from __future__ import annotations

import asyncio
import logging

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from appliance.publisher.packettrack import PacketTrack
from appliance.publisher.video import CameraFeed

from .test_video import Asker, encode_units, feed_unit


class Track(PacketTrack):
    kind = "video"

    async def recv(self) -> av.Packet:
        return await self._next_packet()

    def offer(self, packet: av.Packet) -> None:
        self._put(packet)


def packet(i: int) -> av.Packet:
    p = av.Packet(bytes([i]) * 10)
    p.pts = i
    return p


async def pushing(track: PacketTrack, sink: list[av.Packet] | None = None) -> asyncio.Task[av.Packet | None]:
    got = [] if sink is None else sink
    task = asyncio.ensure_future(track.push(got.append))
    await asyncio.sleep(0)  # it waits now, its sink in place
    return task


async def test_offered_packets_go_to_the_waiting_sink_at_once_and_in_order() -> None:
    track = Track()
    got: list[av.Packet] = []
    task = await pushing(track, got)
    for i in range(5):
        track.offer(packet(i))
        assert [p.pts for p in got] == list(range(i + 1))  # within offer(), no task switch
    assert not task.done() and not track._queue and track.sent == 5
    track.stop()
    with pytest.raises(MediaStreamError):
        await task


async def test_a_released_track_queues_until_its_sender_comes_back() -> None:
    track = Track()
    got: list[av.Packet] = []

    def sink(p: av.Packet) -> None:
        got.append(p)
        track.release()  # e.g. datagrams left for the sender's loop to await

    task = asyncio.ensure_future(track.push(sink))
    await asyncio.sleep(0)
    track.offer(packet(1))
    assert await task is None  # released, nothing queued: the sender's loop has work
    track.offer(packet(2))  # the sender is busy: queued
    track.offer(packet(3))
    assert [p.pts for p in got] == [1]
    # Back in push(): what queued meanwhile comes first, by return, not through the sink.
    for pts in (2, 3):
        queued = await track.push(sink)
        assert queued is not None and queued.pts == pts
    assert [p.pts for p in got] == [1] and track.sent == 3
    # Nothing left: the sink is in place again.
    task = asyncio.ensure_future(track.push(sink))
    await asyncio.sleep(0)
    track.offer(packet(4))
    assert [p.pts for p in got] == [1, 4]
    assert await task is None


async def test_without_a_sink_packets_queue_for_recv() -> None:
    track = Track()
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.offer(packet(7))
    track.offer(packet(8))
    assert (await waiting).pts == 7 and [p.pts for p in track._queue] == [8]


async def test_a_stopped_track_refuses_push() -> None:
    track = Track()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.push(lambda p: None)


async def test_a_failing_sink_is_released_and_the_other_tracks_still_get_the_unit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = CameraFeed(Asker())
    bad, good = feed.track(), feed.track()
    got: list[av.Packet] = []

    def broken(p: av.Packet) -> None:
        raise RuntimeError("sink bug")

    bad_task = asyncio.ensure_future(bad.push(broken))
    good_task = asyncio.ensure_future(good.push(got.append))
    await asyncio.sleep(0)
    units = encode_units(2)
    with caplog.at_level(logging.ERROR, logger="appliance.publisher.packettrack"):
        feed_unit(feed, 1, units[0])  # an IDR: both tracks take it
    assert len(got) == 1 and bytes(got[0]) == units[0].data
    assert await bad_task is None  # released: its sender's loop runs again
    assert "sink bug" in caplog.text
    feed_unit(feed, 2, units[1])
    assert len(got) == 2 and len(bad._queue) == 1  # the released one queues
    feed.close()
    with pytest.raises(MediaStreamError):
        await good_task


async def test_a_pushing_passthrough_track_asks_for_its_first_idr() -> None:
    asker = Asker()
    feed = CameraFeed(asker)
    track = feed.track()
    got: list[av.Packet] = []
    task = asyncio.ensure_future(track.push(got.append))
    await asyncio.sleep(0.01)
    assert asker.calls == 1  # as a first recv() would
    units = encode_units(12, idr_every=10)
    for seq, au in enumerate(units[1:12], 2):  # joins mid-GOP
        feed_unit(feed, seq, au)
    assert [bytes(p) for p in got] == [units[10].data, units[11].data]
    assert track.skipped == 9
    feed.close()
    with pytest.raises(MediaStreamError):
        await task
