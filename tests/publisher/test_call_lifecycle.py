"""Call's bookkeeping over a long day, without aiortc: peers, the bus and signaling are fakes,
and every step is driven explicitly (futures the test resolves, never sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from appliance.bus.topics import EventRecord, EventsPage, EventsSince, ScreeningResult
from appliance.errors import RequestTimeout
from appliance.publisher import call as call_module
from appliance.publisher import channels
from appliance.publisher.call import Call, KioskInfo
from appliance.room import protocol as p


class FakePeer:
    made: list[FakePeer] = []

    def __init__(self, viewer_id: str, ice_servers: Any, **callbacks: Any) -> None:
        self.viewer_id = viewer_id
        self.cb = callbacks
        self.answered = False
        self.audio_track = None
        self.events_sent: list[channels.ToViewer] = []
        self.closed: str | None = None
        FakePeer.made.append(self)

    async def offer(self) -> str:
        return "v=0\r\n"

    async def answer(self, sdp: str) -> None:
        self.answered = True

    async def add_candidate(self, candidate: Any) -> None:
        pass

    def send_event(self, text: str) -> bool:
        self.events_sent.append(channels.decode_to_viewer(text))
        return True

    def send_telemetry(self, text: str) -> bool:
        return True

    async def stats(self) -> dict[str, Any]:
        return {}

    async def close(self, reason: str = "closed") -> None:
        self.closed = reason

    # what the real peer's data channel would report
    def open_events(self) -> None:
        self.cb["on_events_open"](self)

    def receive(self, msg: channels.Msg) -> None:
        self.cb["on_message"](self, channels.encode(msg))

    def events(self) -> list[channels.Event]:
        return [m for m in self.events_sent if isinstance(m, channels.Event)]


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []
        self.handler: Callable[[EventsSince], Awaitable[EventsPage]] | None = None

    def publish_nowait(self, topic: str, msg: Any) -> None:
        self.published.append((topic, msg))

    async def request(self, method: str, params: Any, timeout: float = 5.0) -> Any:
        assert method == "screening.events_since" and self.handler is not None
        return await self.handler(params)


class FakeSpeaker:
    def __init__(self) -> None:
        self.played = 0

    def play(self, frame: Any) -> None:
        self.played += 1

    def idle(self) -> None:
        pass

    def close(self) -> None:
        pass


def record(seq: int, wall_ts: float, topic: str = "screening.result") -> EventRecord:
    result = ScreeningResult(
        seq=seq,
        wall_ts=wall_ts,
        start=wall_ts - 1,
        end=wall_ts,
        result="elevated",
        estimate_c=38.6,
        confidence=0.9,
    )
    return EventRecord(seq=seq, topic=topic, result=result)  # type: ignore[arg-type]


def event(seq: int, topic: str = "screening.result", live: bool = True) -> channels.Event:
    return channels.Event(seq=seq, topic=topic, live=live, wall_ts=1.0, result="normal")  # type: ignore[arg-type]


@pytest.fixture
def call(monkeypatch: pytest.MonkeyPatch) -> Call:
    FakePeer.made = []
    monkeypatch.setattr(call_module, "ViewerPeer", FakePeer)

    async def send(msg: p.Msg) -> bool:
        return True

    return Call(
        FakeBus(),  # type: ignore[arg-type]
        send,
        video=None,  # type: ignore[arg-type]
        audio=None,
        speaker=FakeSpeaker(),  # type: ignore[arg-type]
        remote_video=None,
        max_viewers=4,
        kiosk=KioskInfo(units="C", threshold_c=38.0, thermal_box=(0.0, 0.0, 1.0, 1.0)),
        clock=lambda: 1000.0,
    )


async def settle() -> None:
    """Let every ready callback and task step run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def connected_viewer(call: Call, viewer_id: str) -> FakePeer:
    call.on_signal(p.ViewerJoined(viewer_id=viewer_id))
    await settle()
    call.on_signal(p.Answer(sdp="v=0\r\n", from_=viewer_id))
    await settle()
    peer = call.viewers[viewer_id].peer
    assert isinstance(peer, FakePeer)
    peer.open_events()
    await settle()
    return peer


async def test_an_old_missed_event_replayed_during_a_viewers_catch_up_does_not_alarm(call: Call) -> None:
    """A returning viewer's own replay fails (the bus hiccups) while the publisher replays
    events it missed in a bus outage: those that are old must reach the viewer as history,
    not as live alarms."""
    bus: FakeBus = call.bus  # type: ignore[assignment]
    call.on_event(event(20))
    viewer_fetch: asyncio.Future[EventsPage] = asyncio.get_running_loop().create_future()

    async def handler(params: EventsSince) -> EventsPage:
        if params.seq == 20:  # the viewer's catch-up, after the seq it acknowledged
            return await viewer_fetch
        # The publisher's own catch-up: an alert from an hour ago that it never received.
        return EventsPage(events=[record(21, 1.0), record(21, 1.0, "alert.fever")], last_seq=21)

    bus.handler = handler
    peer = await connected_viewer(call, "v1")
    peer.receive(channels.Join(name="Dana", last_seq=20))
    await settle()
    assert call.viewers["v1"].catching_up
    assert await call.catch_up() == 2
    viewer_fetch.set_exception(RequestTimeout("no reply"))
    await settle()
    got = [(e.seq, e.topic, e.live) for e in peer.events()]
    assert got == [(21, "screening.result", False), (21, "alert.fever", False)]


async def test_a_viewer_leaving_before_it_connects_leaves_no_task_behind(call: Call) -> None:
    call.on_signal(p.ViewerJoined(viewer_id="v1"))
    await settle()
    call.on_signal(p.Answer(sdp="v=0\r\n", from_="v1"))
    await settle()  # answered: waiting for the connection (or a candidate)
    before = asyncio.all_tasks()
    call.on_signal(p.ViewerLeft(viewer_id="v1"))
    await settle()
    assert call.tasks == 0
    left = [t for t in asyncio.all_tasks() - {asyncio.current_task()} if not t.done()]
    assert left == [], f"tasks still pending after the viewer left: {left} (of {before})"


async def test_a_replaced_peers_late_messages_do_not_act_for_the_new_call(call: Call) -> None:
    """The viewer asked for a new call: its old peer is closing, but until it is closed its
    data channel may still deliver messages. They must not count for the new call."""
    old = await connected_viewer(call, "v1")
    old.receive(channels.Join(name="Dana"))
    await settle()
    call.on_signal(p.ViewerJoined(viewer_id="v1"))  # a new call for the same viewer
    await settle()
    assert call.viewers["v1"].peer is not old and old.closed is not None
    old.receive(channels.TalkRequest(active=True))  # was in flight on the old connection
    await settle()
    assert call.floor is None
    # The old connection's media, still draining until it is closed, is not the new call's.
    shown: list[str] = []
    call.remote_video = type("Pip", (), {"offer": lambda _, v, f: shown.append(v)})()  # type: ignore[assignment]
    new = call.viewers["v1"].peer
    assert isinstance(new, FakePeer)
    new.receive(channels.Join(name="Dana"))
    new.receive(channels.TalkRequest(active=True))
    await settle()
    assert call.floor == "v1"
    old.cb["on_audio"](old, object())
    old.cb["on_video"](old, object())
    speaker: FakeSpeaker = call.speaker  # type: ignore[assignment]
    assert speaker.played == 0 and shown == []
    new.cb["on_audio"](new, object())
    new.cb["on_video"](new, object())
    assert speaker.played == 1 and shown == ["v1"]


async def test_a_replaced_peer_opening_late_does_not_mark_the_new_call_connected(call: Call) -> None:
    call.on_signal(p.ViewerJoined(viewer_id="v1"))
    await settle()
    call.on_signal(p.Answer(sdp="v=0\r\n", from_="v1"))
    await settle()
    old = call.viewers["v1"].peer
    assert isinstance(old, FakePeer)
    call.on_signal(p.ViewerJoined(viewer_id="v1"))  # slow to connect: the page asks again
    await settle()
    new = call.viewers["v1"]
    old.open_events()  # the old connection's channel opens before it is closed
    await settle()
    assert not new.connected.is_set()
    assert not old.events_sent  # no hello on a call that is over


async def test_a_talker_whose_audio_stops_loses_the_floor(call: Call) -> None:
    """A viewer holding push-to-talk whose network or browser dies sends no more audio, and
    its connection takes about 30 s (ICE consent) to be declared failed. The kiosk screen's
    talking sign and everyone's "Dana is talking" must not stay up that long: the floor goes
    once its holder has sent nothing for FLOOR_SILENCE_S."""
    now = [1000.0]
    call.clock = lambda: now[0]
    bus: FakeBus = call.bus  # type: ignore[assignment]
    dana = await connected_viewer(call, "v1")
    sam = await connected_viewer(call, "v2")
    dana.receive(channels.Join(name="Dana"))
    dana.receive(channels.TalkRequest(active=True))
    await settle()
    assert call.floor == "v1"
    for _ in range(3):  # talking: audio keeps coming, the floor stays
        now[0] += call_module.FLOOR_SILENCE_S / 2
        dana.cb["on_audio"](dana, object())
        await call.tick()
        assert call.floor == "v1"
    now[0] += call_module.FLOOR_SILENCE_S + 0.1  # then nothing more
    await call.tick()
    assert call.floor is None
    states = [m for t, m in bus.published if t == "call.state"]
    assert states[-1].talking is False
    for peer in (dana, sam):
        talk = [m for m in peer.events_sent if isinstance(m, channels.Talk)][-1]
        assert talk.talker is None and not talk.you


async def test_a_talker_gets_time_for_its_first_audio(call: Call) -> None:
    """The floor is taken before the first audio frame arrives (the page says talk once its
    microphone is on): the silence is counted from the grant, not from the call's start."""
    now = [1000.0]
    call.clock = lambda: now[0]
    dana = await connected_viewer(call, "v1")
    now[0] += 10 * call_module.FLOOR_SILENCE_S
    dana.receive(channels.Join(name="Dana"))
    dana.receive(channels.TalkRequest(active=True))
    await settle()
    await call.tick()
    assert call.floor == "v1"
    now[0] += call_module.FLOOR_SILENCE_S + 0.1
    await call.tick()
    assert call.floor is None


# --- join first: talk, chat and ack-alert act under the viewer's name -------------------------


async def alert_shown_before_join(call: Call, peer: FakePeer, seq: int) -> None:
    """A fever alert seq, and the viewer's cumulative ack reaching it (ack is allowed before join)."""
    call.on_event(event(seq))
    call.on_event(event(seq, "alert.fever"))
    peer.receive(channels.Ack(seq=seq))
    await settle()


UNJOINED: dict[str, channels.Msg] = {
    "talk": channels.TalkRequest(active=True),
    "chat": channels.Say(text="hello"),
    "ack-alert": channels.AckAlert(seq=5),
}


@pytest.mark.parametrize("kind", list(UNJOINED))
async def test_a_viewer_that_has_not_joined_is_refused_what_acts_under_its_name(
    call: Call, kind: str
) -> None:
    """The floor is shown to everyone by name, chat lines carry it, and an alert's
    acknowledgement is a record people rely on: none of them under a viewer's fallback label
    (its id) because it never sent join."""
    bus: FakeBus = call.bus  # type: ignore[assignment]
    dana = await connected_viewer(call, "v1")
    sam = await connected_viewer(call, "v2")
    sam.receive(channels.Join(name="Sam"))
    await alert_shown_before_join(call, dana, 5)
    talks_at_sam = len([m for m in sam.events_sent if isinstance(m, channels.Talk)])
    dana.receive(UNJOINED[kind])
    await settle()
    problems = [m for m in dana.events_sent if isinstance(m, channels.Problem)]
    assert problems == [channels.Problem(code="not-allowed", message="send join first", ref=kind)]
    assert call.floor is None
    assert [t for t, _ in bus.published if t in ("call.chat", "alert.ack")] == []
    assert not call.events.acks
    assert len([m for m in sam.events_sent if isinstance(m, channels.Talk)]) == talks_at_sam
    assert not [m for m in sam.events_sent if isinstance(m, channels.Chat | channels.AlertAcked)]


@pytest.mark.parametrize("kind", list(UNJOINED))
async def test_the_same_message_after_join_is_accepted(call: Call, kind: str) -> None:
    bus: FakeBus = call.bus  # type: ignore[assignment]
    bus.handler = lambda params: asyncio.sleep(0, EventsPage(events=[], last_seq=5))
    dana = await connected_viewer(call, "v1")
    await alert_shown_before_join(call, dana, 5)
    dana.receive(channels.Join(name="Dana", last_seq=5))
    await settle()
    dana.receive(UNJOINED[kind])
    await settle()
    assert [m for m in dana.events_sent if isinstance(m, channels.Problem)] == []
    if kind == "talk":
        assert call.floor == "v1"
        assert [m for m in dana.events_sent if isinstance(m, channels.Talk)][-1].talker == "Dana"
    elif kind == "chat":
        assert [(t, m.sender) for t, m in bus.published if t == "call.chat"] == [("call.chat", "Dana")]
    else:
        assert [(t, m.by) for t, m in bus.published if t == "alert.ack"] == [("alert.ack", "Dana")]


async def test_before_join_ack_listen_and_a_released_talk_pass_without_a_refusal(call: Call) -> None:
    """ack is a cursor and listen only opens the kiosk's microphone (the load viewers of
    appliance.bench.video listen without joining); talk false before join has no floor to
    release and is ignored."""
    dana = await connected_viewer(call, "v1")
    heard: list[bool] = []
    dana.audio_track = type("Mic", (), {"listen": lambda _, on: heard.append(on)})()  # type: ignore[assignment]
    call.on_event(event(3))
    dana.receive(channels.Ack(seq=3))
    dana.receive(channels.Listen(on=True))
    dana.receive(channels.TalkRequest(active=False))
    await settle()
    assert heard == [True]
    assert [m for m in dana.events_sent if isinstance(m, channels.Problem)] == []
