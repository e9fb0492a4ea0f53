"""CameraFeed and PassthroughTrack: real access units from the camera's encoder, no re-encoding."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import PACKET_MAX, H264Encoder, h264_depayload
from aiortc.mediastreams import MediaStreamError

from appliance.bus.topics import H264AccessUnit
from appliance.camera import h264
from appliance.camera.base import AccessUnit
from appliance.camera.encoder import SoftwareH264Encoder
from appliance.publisher.keyframes import KeyframeRequests
from appliance.publisher.video import TRACK_QUEUE, CameraFeed, FullFragments, SharedPacketizer


def encode_units(n: int, *, idr_every: int = 0) -> list[AccessUnit]:
    """n access units of a moving 160x120 picture; an IDR first and every idr_every units."""
    enc = SoftwareH264Encoder(160, 120, 30, 200_000, keyframe_interval_s=100.0)
    units: list[AccessUnit] = []
    for i in range(n):
        if idr_every and i and i % idr_every == 0:
            enc.request_keyframe()
        image = np.full((120, 160, 3), 40, np.uint8)
        image[:, (i * 4) % 160 :][:, :8] = 220
        units += enc.encode(image, "bgr24", 100.0 + i / 30)
    return units


class Asker:
    """What the daemon's ask_camera does, counted, answering like the camera would."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return True


def feed_unit(feed: CameraFeed, seq: int, au: AccessUnit) -> None:
    msg = H264AccessUnit(
        pts=au.pts, keyframe=au.keyframe, width=au.width, height=au.height, capture_ts=au.capture_ts
    )
    feed.feed(seq, msg, au.data)


@pytest.fixture(scope="module")
def units() -> list[AccessUnit]:
    return encode_units(40, idr_every=10)


async def test_a_track_starts_at_an_idr_and_asks_for_one(units: list[AccessUnit]) -> None:
    asker = Asker()
    feed = CameraFeed(asker)
    track = feed.track()
    first = asyncio.ensure_future(track.recv())
    await settle()
    assert asker.calls == 1  # asked when the sender first pulled, not before
    for seq, au in enumerate(units[1:12], 2):  # joins mid-GOP: units 1..9 are P-frames
        feed_unit(feed, seq, au)
    packet = await first
    assert h264.is_idr(bytes(packet)) and bytes(packet) == units[10].data
    assert track.skipped == 9
    assert packet.pts == units[10].pts and packet.time_base.denominator == 90000
    assert bytes(await track.recv()) == units[11].data
    feed.close()


async def test_lost_units_on_the_bus_resync_every_track(units: list[AccessUnit]) -> None:
    asker = Asker()
    feed = CameraFeed(asker, requests=KeyframeRequests(min_interval=0.0))
    track = feed.track()
    await _start(track)
    feed_unit(feed, 1, units[0])
    feed_unit(feed, 2, units[1])
    assert bytes(await track.recv()) == units[0].data
    await settle()
    asked = asker.calls
    feed_unit(feed, 5, units[4])  # seqs 3 and 4 never arrived
    await settle()
    assert feed.lost_units == 2 and track.need_keyframe
    assert asker.calls == asked + 1
    feed_unit(feed, 6, units[5])  # still a P-frame: dropped
    feed_unit(feed, 7, units[10])  # the IDR the request produced
    assert bytes(await track.recv()) == units[10].data  # unit 1 was dropped with the resync
    feed.close()


async def test_a_restarted_camera_resyncs_too(units: list[AccessUnit]) -> None:
    feed = CameraFeed(Asker())
    track = feed.track()
    feed_unit(feed, 100, units[0])
    feed_unit(feed, 1, units[1])  # the camera daemon restarted: its seqs begin again
    assert feed.restarts == 1 and track.need_keyframe
    feed.close()


async def test_a_stalled_sender_starts_over_at_the_next_idr(units: list[AccessUnit]) -> None:
    asker = Asker()
    feed = CameraFeed(asker, requests=KeyframeRequests(min_interval=0.0))
    track = feed.track()
    await _start(track)
    more = encode_units(TRACK_QUEUE + 5)
    for seq, au in enumerate(more, 1):
        feed_unit(feed, seq, au)
    # Nobody pulled: the queue overflowed and the track waits for an IDR rather than grow.
    assert track.overflows == 1 and track.need_keyframe
    assert len(track._queue) < TRACK_QUEUE
    feed.close()


async def test_pli_storms_cost_one_request(units: list[AccessUnit]) -> None:
    asker = Asker()
    feed = CameraFeed(asker, requests=KeyframeRequests(min_interval=0.5, answer_timeout=1.0))
    feed.track()
    for _ in range(20):
        feed.picture_lost()
    await settle()
    assert asker.calls == 1
    feed_unit(feed, 1, units[0])  # the IDR
    feed.picture_lost()  # a new loss within the interval: deferred, then sent once
    await asyncio.sleep(0.6)
    assert asker.calls == 2
    feed.close()


async def test_the_packet_goes_through_aiortcs_packetiser_unchanged(units: list[AccessUnit]) -> None:
    feed = CameraFeed(Asker())
    track = feed.track()
    await _start(track)
    feed_unit(feed, 1, units[0])
    packet = await track.recv()
    payloads, timestamp = H264Encoder().pack(packet)  # what RTCRtpSender does with a Packet
    assert timestamp == units[0].pts
    assert all(len(p) <= 1300 for p in payloads)
    rebuilt = b"".join(h264_depayload(p) for p in payloads)
    assert [bytes(n) for n in h264.nal_units(rebuilt)] == [bytes(n) for n in h264.nal_units(units[0].data)]
    feed.close()


async def test_the_shared_packetiser_packs_once_and_as_aiortc_would(units: list[AccessUnit]) -> None:
    feed = CameraFeed(Asker())
    tracks = [feed.track() for _ in range(3)]
    for t in tracks:
        await _start(t)
    feed_unit(feed, 1, units[0])
    packets = [await t.recv() for t in tracks]
    assert packets[0] is packets[1] is packets[2]  # one packet object for every viewer
    before = SharedPacketizer.packed
    results = [SharedPacketizer().pack(p) for p in packets]
    assert SharedPacketizer.packed == before + 1
    assert results[0] is results[1] is results[2]
    # aiortc's own packetiser, run afresh: the same packets, in number, order, headers and what
    # they carry; only FU-A fragments are cut full rather than even (see the next test).
    ours, timestamp = results[0]
    theirs, their_timestamp = H264Encoder().pack(packets[0])
    assert timestamp == their_timestamp and len(ours) == len(theirs)
    assert [p[:2] for p in ours] == [p[:2] for p in theirs]
    assert b"".join(map(h264_depayload, ours)) == b"".join(map(h264_depayload, theirs))
    feed.close()


@pytest.mark.parametrize("length", [1301, 1302, 2597, 2598, 2599, 7001, 60000])
def test_fu_a_fragments_are_full_but_the_last(length: int) -> None:
    nal = bytes([0x65]) + bytes(i % 251 for i in range(length - 1))  # an IDR slice's NAL unit
    ours = FullFragments._packetize_fu_a(nal)
    theirs = H264Encoder._packetize_fu_a(nal)
    # As many packets, with the same FU indicator and start/end bits, as aiortc makes ...
    assert len(ours) == len(theirs) >= 2
    assert [f[:2] for f in ours] == [f[:2] for f in theirs]
    # ... all of the largest size but the last, so one UDP GSO call takes them all ...
    assert {len(f) for f in ours[:-1]} == {PACKET_MAX} and 2 < len(ours[-1]) <= PACKET_MAX
    # ... and aiortc's depayloader (a viewer's) puts the NAL unit back together.
    assert b"".join(map(h264_depayload, ours)) == b"\x00\x00\x00\x01" + nal
    # aiortc's pack() cuts with this, not its own (it would still work, in more GSO calls).
    packet = av.Packet(b"\x00\x00\x00\x01" + nal)
    packet.pts, packet.time_base = 0, Fraction(1, 90000)
    assert FullFragments().pack(packet)[0] == ours


async def test_closing_ends_every_track() -> None:
    feed = CameraFeed(Asker())
    track = feed.track()
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    feed.close()
    with pytest.raises(MediaStreamError):
        await pending
    assert feed.tracks == 0


async def settle() -> None:
    """Let the tasks the feed started (its bus requests) run."""
    await asyncio.sleep(0.01)


async def _start(track: object) -> None:
    """Make the track count as started (its sender pulled once) without waiting on it."""
    task = asyncio.ensure_future(track.recv())  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    task.cancel()
