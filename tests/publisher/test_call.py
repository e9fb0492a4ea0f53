"""The publisher with real parts in one process: the bus broker, the camera service (sim backend,
160x120), the publisher's service, the in-test room service, and viewers played by aiortc."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.bus.client import BusClient
from appliance.bus.framering import FrameRingReader
from appliance.bus.topics import (
    AlertAck,
    CallState,
    ChatMessage,
    FrameRingNotice,
    ScreeningState,
    ThermalFrame,
)
from appliance.publisher import call as call_module
from appliance.publisher import channels
from appliance.publisher.speaker import NullSpeaker
from appliance.publisher.video import SharedPacketizer
from appliance.room import protocol as p
from appliance.screening.events import EventStore

from .conftest import Camera, Publisher
from .helpers import Screening, wait_until
from .room import RoomServer
from .viewer import Bars, Tone

Start = Callable[..., Awaitable[Publisher]]
BusFactory = Callable[[str], Awaitable[BusClient]]


@pytest.fixture
async def screening(run_dir: Path, bus_factory: BusFactory) -> Screening:
    return Screening(await bus_factory("screening"), EventStore.open(run_dir / "events.db", boot_id="b"))


def thermal_frame(seq: int, hot: float = 36.5) -> ThermalFrame:
    return ThermalFrame(
        pixels=[22.0] * 27 + [hot] * 10 + [22.0] * 27, thermistor=23.0, rate_hz=10.0, frame_seq=seq
    )


async def test_a_viewer_gets_h264_passed_through_and_data_channel_messages(
    camera: Camera, start_publisher: Start, viewers: Any, bus_factory: BusFactory, screening: Screening
) -> None:
    pub = await start_publisher()
    observer = await bus_factory("observer")
    call_states = observer.subscribe("call.state")
    viewer = await viewers()
    await viewer.wait_for(lambda: len(viewer.got.video) >= 10, "video frames", 15)
    # Decoding starts at an IDR: the first decoded picture is a keyframe.
    assert viewer.got.video[0][1]

    # H.264 42e01f is all the kiosk offered for its camera, and that is what was agreed.
    assert viewer.pc is not None
    offer = viewer.pc.remoteDescription.sdp
    camera_section = offer.split("m=")[1]
    assert camera_section.startswith("video") and "a=sendonly" in camera_section
    rtpmaps = [line for line in camera_section.splitlines() if line.startswith("a=rtpmap")]
    assert {line.split()[1].split("/")[0] for line in rtpmaps} == {"H264", "rtx"}
    assert "profile-level-id=42e01f" in camera_section and "packetization-mode=1" in camera_section
    # No bandwidth estimate asked for, or answered: one bitrate for every viewer.
    answer_camera = viewer.pc.localDescription.sdp.split("m=")[1]
    for section in (camera_section, answer_camera):
        assert "goog-remb" not in section and "abs-send-time" not in section

    # One encode, in the camera: the video sender holds no encoder of its own, only the
    # shared packetiser (aiortc would have made an H264Encoder had the slot been empty).
    peer = pub.call.viewers[viewer.peer_id].peer
    video_sender = next(s for s in peer.pc.getSenders() if s.kind == "video")
    assert isinstance(video_sender._RTCRtpSender__encoder, SharedPacketizer)

    # Telemetry: thermal frames and the screening state; events: results and alerts with seq.
    await viewer.wait_for(lambda: viewer.messages(channels.Hello), "hello")
    await wait_until(lambda: pub.call.viewers[viewer.peer_id].joined, "join")
    bus = screening.bus
    bus.publish_nowait("thermal.frame", thermal_frame(7))
    bus.publish_nowait("screening.state", ScreeningState(state="measuring", progress=0.5))
    seq = screening.record("elevated", 38.7)
    await viewer.wait_for(lambda: viewer.messages(channels.Thermal), "thermal")
    await viewer.wait_for(lambda: viewer.messages(channels.State), "state")
    await viewer.wait_for(lambda: len(viewer.messages(channels.Event)) == 2, "result and alert")
    thermal = viewer.messages(channels.Thermal)[0]
    assert thermal.frame_seq == 7 and len(thermal.pixels) == 64 and thermal.pixels[30] == 36.5
    assert viewer.messages(channels.State, channels.TELEMETRY)[-1].state == "measuring"
    result, alert = viewer.messages(channels.Event, channels.EVENTS)
    assert (result.seq, result.topic, alert.seq, alert.topic) == (seq, "screening.result", seq, "alert.fever")
    assert alert.live and alert.estimate_c == 38.7 and alert.threshold_c == 38.0
    hello = viewer.messages(channels.Hello)[0]
    assert hello.kiosk == "Front door" and hello.viewer_id == viewer.peer_id

    # call.state lists the viewer with its connection figures.
    async with asyncio.timeout(10):
        while True:
            state = (await call_states.get()).msg
            assert isinstance(state, CallState)
            figures = state.viewers[0] if state.viewers else None
            if (
                state.room_connected
                and figures
                and figures.bitrate_kbps is not None
                and figures.rtt_ms is not None
            ):
                break
    assert state.viewers[0].viewer_id == viewer.peer_id and state.viewers[0].bitrate_kbps > 0
    # The round trip: our sender reports, answered in the viewer's receiver reports.
    assert state.viewers[0].rtt_ms >= 0 and state.viewers[0].loss is not None


async def test_a_pli_makes_the_camera_send_a_keyframe(
    camera: Camera, start_publisher: Start, viewers: Any
) -> None:
    await start_publisher()
    viewer = await viewers()
    await viewer.wait_for(lambda: len(viewer.got.video) >= 15, "video", 15)
    await asyncio.sleep(0.6)  # past the request limiter's interval
    calls = camera.keyframe_calls
    frames = len(viewer.got.video)
    sent_at = time.monotonic()
    await viewer.send_pli()
    await wait_until(lambda: camera.keyframe_calls > calls, "camera.keyframe after the PLI", 5)
    # The camera keyframes only every 10 s on its own here, so this IDR is the requested one.
    await viewer.wait_for(lambda: any(k for _, k in viewer.got.video[frames:]), "a keyframe at the viewer", 5)
    arrival = next(t for t, k in viewer.got.video[frames:] if k)
    assert arrival - sent_at < 1.0


async def test_a_full_room_refuses_the_next_viewer_only(
    camera: Camera, start_publisher: Start, viewers: Any, room: RoomServer
) -> None:
    pub = await start_publisher(max_viewers=1)
    first = await viewers()
    await first.wait_for(lambda: len(first.got.video) >= 3, "video", 15)
    second = await viewers()
    await second.wait_for(lambda: second.got.errors, "an error for the second viewer")
    error = second.got.errors[0]
    assert error.code == "room-full" and "1 viewer" in error.message
    assert second.offers == 0 and pub.call.refused_full == 1
    before = len(first.got.video)
    await first.wait_for(lambda: len(first.got.video) > before + 5, "video still flowing to the first", 5)
    assert not first.got.errors
    # Once the first leaves, the second can have its call.
    await first.close()
    await second.send(p.RequestOffer())
    await second.wait_for(lambda: len(second.got.video) >= 3, "video for the second viewer", 15)


async def test_a_bad_answer_gets_an_error_to_that_viewer_only(
    camera: Camera, start_publisher: Start, viewers: Any
) -> None:
    pub = await start_publisher()
    good = await viewers()
    await good.wait_for(lambda: len(good.got.video) >= 3, "video", 15)
    bad = await viewers(answer_sdp="v=0\r\nthis is not sdp\r\n")
    await bad.wait_for(lambda: bad.got.errors, "an error for the bad viewer")
    assert bad.got.errors[0].code == "bad-message"
    await wait_until(lambda: bad.peer_id not in pub.call.viewers, "the bad viewer's call dropped")
    # A malformed candidate from the good viewer is refused, and its call goes on.
    await good.send(p.Ice(candidate=p.IceCandidate(candidate="candidate:garbage", sdpMid="0")))
    await good.wait_for(lambda: good.got.errors, "an error for the malformed candidate")
    assert good.got.errors[0].code == "bad-message" and good.got.errors[0].message.startswith(
        "bad ICE candidate"
    )
    before = len(good.got.video)
    await good.wait_for(lambda: len(good.got.video) > before + 5, "video still flowing", 5)
    assert len(bad.got.errors) == 1
    # Bad data-channel messages get an error on the channel, nothing more.
    good.send_event('{"type":"dance"}')
    good.send_event("{not json")
    await good.wait_for(lambda: len(good.messages(channels.Problem)) == 2, "two errors on the channel")
    assert [m.code for m in good.messages(channels.Problem)] == ["unknown-type", "bad-json"]
    assert good.peer_id in pub.call.viewers


async def test_chat_talk_and_alert_acknowledgement(
    camera: Camera, start_publisher: Start, viewers: Any, bus_factory: BusFactory, screening: Screening
) -> None:
    pub = await start_publisher()
    kiosk = await bus_factory("screen")
    chats = kiosk.subscribe("call.chat")
    acks = kiosk.subscribe("alert.ack")
    states = kiosk.subscribe("call.state")
    dana = await viewers(name="Dana", talk=Tone())
    sam = await viewers(name="Sam", talk=Tone())
    for v in (dana, sam):
        await v.wait_for(lambda v=v: v.messages(channels.Hello), "hello")
    await wait_until(lambda: all(v.joined for v in pub.call.viewers.values()), "both joined")

    dana.send_event(channels.Say(text="Please step closer\x07"))
    msg = (await chats.get(10)).msg
    assert isinstance(msg, ChatMessage) and (msg.sender, msg.text) == ("Dana", "Please step closer")
    await sam.wait_for(lambda: sam.messages(channels.Chat), "Dana's line at Sam")
    assert sam.messages(channels.Chat)[0].origin == "viewer" and not dana.messages(channels.Chat)
    kiosk.publish_nowait("call.chat", ChatMessage(sender="kiosk", text="On my way", wall_ts=time.time()))
    await dana.wait_for(lambda: dana.messages(channels.Chat), "the kiosk's line")
    assert dana.messages(channels.Chat)[0].origin == "kiosk"

    # Push-to-talk: Dana takes the floor; her audio reaches the speaker, Sam's does not.
    speaker = pub.service.speaker
    assert isinstance(speaker, NullSpeaker)
    dana.send_event(channels.TalkRequest(active=True))
    await sam.wait_for(
        lambda: any(t.talker == "Dana" for t in sam.messages(channels.Talk)), "the floor at Sam"
    )
    sam.send_event(channels.TalkRequest(active=True))  # refused: Dana talks
    await wait_until(lambda: speaker.frames > 25, "Dana's audio at the speaker", 10)
    assert pub.call.floor == dana.peer_id and speaker.peak > 0.1
    async with asyncio.timeout(5):
        while not (await states.get()).msg.talking:  # type: ignore[attr-defined]
            pass
    dana.send_event(channels.TalkRequest(active=False))
    await wait_until(lambda: pub.call.floor is None, "the floor released")
    frames = speaker.frames
    await asyncio.sleep(0.3)
    assert speaker.frames == frames  # nobody holds the floor: nothing plays

    # A fever alert acknowledged by Sam: on the bus once, and shown to Dana.
    seq = screening.record("elevated", 38.9)
    await sam.wait_for(lambda: len(sam.messages(channels.Event)) == 2, "the alert")
    sam.send_event(channels.AckAlert(seq=seq + 5))  # an alert that never was
    await sam.wait_for(lambda: sam.messages(channels.Problem), "a refusal")
    assert sam.messages(channels.Problem)[0].code == "not-allowed"
    sam.send_event(channels.AckAlert(seq=seq))
    sam.send_event(channels.AckAlert(seq=seq))
    ack = (await acks.get(10)).msg
    assert isinstance(ack, AlertAck) and (ack.seq, ack.by) == (seq, "Sam")
    await dana.wait_for(lambda: dana.messages(channels.AlertAcked), "the acknowledgement at Dana")
    assert dana.messages(channels.AlertAcked)[0].by == "Sam"
    with pytest.raises(TimeoutError):
        await acks.get(0.3)  # the second acknowledgement changed nothing


async def test_a_returning_viewer_gets_what_it_missed(
    camera: Camera, start_publisher: Start, viewers: Any, screening: Screening
) -> None:
    first_seq = screening.record()  # before the publisher started: history
    await start_publisher()
    fresh = await viewers()
    await fresh.wait_for(lambda: fresh.messages(channels.Event), "history for a fresh viewer")
    assert [(e.seq, e.live) for e in fresh.messages(channels.Event)] == [(first_seq, False)]
    seen = screening.record()
    await fresh.wait_for(lambda: len(fresh.messages(channels.Event)) == 2, "a live result")
    await fresh.close()
    missed = [screening.record("elevated", 38.5), screening.record()]
    back = await viewers(last_seq=seen)
    await back.wait_for(lambda: len(back.messages(channels.Event)) == 3, "the missed events")
    got = [(e.seq, e.topic, e.live) for e in back.messages(channels.Event)]
    assert got == [
        (missed[0], "screening.result", False),
        (missed[0], "alert.fever", False),
        (missed[1], "screening.result", False),
    ]
    live = screening.record()
    await back.wait_for(lambda: len(back.messages(channels.Event)) == 4, "then live events")
    assert (back.messages(channels.Event)[-1].seq, back.messages(channels.Event)[-1].live) == (live, True)


async def test_a_viewer_far_behind_gets_the_newest_of_what_it_missed(
    camera: Camera,
    start_publisher: Start,
    viewers: Any,
    screening: Screening,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replay is bounded (CATCH_UP_LIMIT results): a viewer away for longer than that gets
    the newest of what it missed, not the oldest. Those are what someone opening the page now
    needs to see (a fever alert of a minute ago), and the live events follow on from them."""
    monkeypatch.setattr(call_module, "CATCH_UP_LIMIT", 4)
    await start_publisher()
    seen = screening.record()
    missed = [screening.record(publish=False) for _ in range(8)]
    alert = screening.record("elevated", 38.7, publish=False)
    back = await viewers(last_seq=seen)
    await back.wait_for(lambda: len(back.messages(channels.Event)) == 5, "the newest missed events")
    await asyncio.sleep(0.2)
    got = [(e.seq, e.topic) for e in back.messages(channels.Event)]
    assert got == [
        (missed[-3], "screening.result"),
        (missed[-2], "screening.result"),
        (missed[-1], "screening.result"),
        (alert, "screening.result"),
        (alert, "alert.fever"),
    ]


async def test_events_missed_during_a_bus_outage_are_replayed(
    camera: Camera, start_publisher: Start, viewers: Any, screening: Screening, broker: Any, run_dir: Path
) -> None:
    pub = await start_publisher()
    viewer = await viewers()
    await wait_until(lambda: any(v.joined for v in pub.call.viewers.values()), "join", 15)
    first = screening.record()
    await viewer.wait_for(lambda: viewer.messages(channels.Event), "a live event")
    # The broker goes away; meanwhile the screening daemon stores results nobody receives.
    await broker.close()
    missed = [screening.record("elevated", 38.4, publish=False), screening.record(publish=False)]
    await broker.start(run_dir / "bus.sock")
    await viewer.wait_for(lambda: len(viewer.messages(channels.Event)) == 4, "the replayed events", 15)
    got = [(e.seq, e.topic) for e in viewer.messages(channels.Event)]
    assert got == [
        (first, "screening.result"),
        (missed[0], "screening.result"),
        (missed[0], "alert.fever"),
        (missed[1], "screening.result"),
    ]
    assert all(e.live for e in viewer.messages(channels.Event)[1:])  # recent: they still alarm


async def test_a_viewers_camera_reaches_the_kiosk_screen(
    camera: Camera, start_publisher: Start, viewers: Any, bus_factory: BusFactory, run_dir: Path
) -> None:
    await start_publisher()
    screen = await bus_factory("screen")
    notices = screen.subscribe("call.remote_video")
    viewer = await viewers(camera=Bars())
    notice = (await notices.get(20)).msg
    assert isinstance(notice, FrameRingNotice) and (notice.width, notice.height) == (320, 240)
    reader = FrameRingReader.open(run_dir / notice.ring)
    frame = None
    async with asyncio.timeout(5):
        while frame is None:
            frame = reader.read(reader.latest_seq)
            await asyncio.sleep(0.01)
    image = frame.pixels.reshape(240, 320, 3)
    # 160x120 letterboxed into 320x240 is a full-frame 2x scale: green everywhere, some white.
    assert image[..., 1].mean() > 120 and image.max() == 255
    assert viewer.got.errors == []


async def test_killing_the_room_service_mid_call_leads_to_a_reconnect(
    camera: Camera, start_publisher: Start, viewers: Any, room: RoomServer
) -> None:
    pub = await start_publisher()
    viewer = await viewers()
    await viewer.wait_for(lambda: len(viewer.got.video) >= 5, "video", 15)
    await room.kill()
    await wait_until(lambda: not pub.service.link.connected, "the publisher noticing")
    # Media is peer to peer: it keeps flowing while the service is down.
    before = len(viewer.got.video)
    await viewer.wait_for(lambda: len(viewer.got.video) > before + 10, "video during the outage", 5)
    await room.start()
    await room.wait_device(15)
    # The room sees the device at the upgrade; the link calls itself connected at the welcome.
    await wait_until(lambda: pub.service.link.connected, "the publisher's link welcomed again")
    assert room.device_connects == 2
    again = await viewers()
    await again.wait_for(lambda: len(again.got.video) >= 5, "video after the reconnect", 15)


async def test_the_kiosk_microphone_is_open_only_for_listening_viewers(
    camera: Camera, start_publisher: Start, viewers: Any
) -> None:
    pub = await start_publisher()
    audio = pub.service.audio
    muted = await viewers()
    listener = await viewers()
    for v in (muted, listener):
        await v.wait_for(lambda v=v: v.messages(channels.Hello) and len(v.got.video) >= 3, "the call", 15)
    await asyncio.sleep(0.5)
    assert not audio.capturing and audio.sessions == 0  # nobody unmuted: no capture at all
    listener.send_event(channels.Listen(on=True))
    await listener.wait_for(lambda: listener.got.audio_frames >= 25, "the kiosk's sound", 10)
    assert audio.capturing and audio.sessions == 1
    assert muted.got.audio_frames == 0
    listener.send_event(channels.Listen(on=False))
    await wait_until(lambda: not audio.capturing, "the microphone closed")
    # Listening again resumes with timestamps that moved on with the clock.
    listener.send_event(channels.Listen(on=True))
    heard = listener.got.audio_frames
    await listener.wait_for(lambda: listener.got.audio_frames >= heard + 10, "the sound again", 10)
    assert audio.sessions == 2
    await listener.close()
    await wait_until(lambda: not audio.capturing, "the microphone closed when the listener left")


async def test_each_access_unit_is_packetised_once_for_all_viewers(
    camera: Camera, start_publisher: Start, viewers: Any
) -> None:
    pub = await start_publisher()
    feed = pub.service.feed
    assert feed is not None
    three = [await viewers() for _ in range(3)]
    for v in three:
        await v.wait_for(lambda v=v: len(v.got.video) >= 5, "video", 15)
    units, packed = feed.units, SharedPacketizer.packed
    frames = [len(v.got.video) for v in three]
    await asyncio.sleep(1.0)
    units, packed = feed.units - units, SharedPacketizer.packed - packed
    assert all(len(v.got.video) - f >= 10 for v, f in zip(three, frames, strict=True))
    # Three viewers, yet about one packetising per access unit (a sender may be a unit behind
    # at either end of the window).
    assert units >= 10 and abs(packed - units) <= 3


async def test_a_peer_that_fails_or_never_answers_is_cleaned_up(
    camera: Camera, start_publisher: Start, viewers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.publisher import call as call_module

    monkeypatch.setattr(call_module, "ANSWER_TIMEOUT_S", 1.0)
    pub = await start_publisher()
    feed = pub.service.feed
    assert feed is not None
    # A viewer whose browser died: its connection closes without a word on the signaling.
    gone = await viewers()
    await gone.wait_for(lambda: len(gone.got.video) >= 3, "video", 15)
    assert gone.pc is not None
    await gone.pc.close()
    await gone.wait_for(lambda: any(isinstance(m, p.Bye) for m in gone.got.signals), "a bye for it")
    await wait_until(lambda: not pub.call.viewers, "the failed peer dropped")
    # A viewer that never answers the offer.
    silent = await viewers(answer=False)
    await silent.wait_for(lambda: silent.offers == 1, "the offer")
    await wait_until(lambda: not pub.call.viewers, "the unanswered call dropped", 5)
    await silent.wait_for(lambda: any(isinstance(m, p.Bye) for m in silent.got.signals), "a bye")
    await wait_until(lambda: pub.call.tasks == 0 and feed.tracks == 0, "nothing left of either call")


async def test_a_missing_microphone_and_speaker_degrade_the_health_not_the_call(
    camera: Camera, start_publisher: Start, viewers: Any
) -> None:
    missing = "hw:CARD=NoSuchCard,DEV=0"
    pub = await start_publisher(audio_backend="alsa", mic_device=missing, speaker_device=missing)
    statuses: list[tuple[str, bool]] = []
    pub.service.on_status = lambda text, degraded: statuses.append((text, degraded))
    await wait_until(lambda: statuses, "a status", 5)
    assert statuses[-1][1] is False  # nothing has failed yet: nobody listened or talked
    viewer = await viewers(name="Dana", talk=Tone())
    await viewer.wait_for(
        lambda: viewer.messages(channels.Hello) and len(viewer.got.video) >= 3, "the call", 15
    )
    viewer.send_event(channels.Listen(on=True))
    viewer.send_event(channels.TalkRequest(active=True))
    await wait_until(
        lambda: statuses[-1][1] and "microphone" in statuses[-1][0] and "speaker" in statuses[-1][0],
        "a degraded status naming the microphone and the speaker",
        10,
    )
    assert "NoSuchCard" in statuses[-1][0]
    # The call goes on without them.
    seen = len(viewer.got.video)
    await viewer.wait_for(lambda: len(viewer.got.video) >= seen + 5, "video after the audio failed", 10)
    assert viewer.got.errors == []
