"""Input from the network that is legal yet unusual: the kiosk's answer to each is an error to
that viewer at most, and never a fault for the other viewers or the publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.bus.client import BusClient
from appliance.bus.topics import AlertAck, ChatMessage
from appliance.publisher import call as call_module
from appliance.publisher import channels
from appliance.room import protocol as p
from appliance.screening.events import EventStore

from .conftest import Camera, Publisher
from .helpers import Screening, wait_until
from .room import RoomServer
from .viewer import AiortcViewer

Start = Callable[..., Awaitable[Publisher]]
BusFactory = Callable[[str], Awaitable[BusClient]]


class PaddedAnswerViewer(AiortcViewer):
    """Answers with its real SDP padded by an unknown session attribute, so that the answer it
    sends the room service is exactly the protocol's largest message."""

    async def send(self, msg: p.Msg) -> None:
        if isinstance(msg, p.Answer):
            head, rest = msg.sdp.split("m=", 1)
            pad = "a=x-pad:"
            bare = len(p.encode(p.Answer(sdp=head + pad + "\r\n" + "m=" + rest)))
            msg = p.Answer(sdp=head + pad + "x" * (p.MAX_MESSAGE_BYTES - bare) + "\r\nm=" + rest)
            assert len(p.encode(msg)) == p.MAX_MESSAGE_BYTES
        await super().send(msg)


async def test_an_answer_of_the_largest_size_the_service_relays_keeps_the_link_up(
    camera: Camera, start_publisher: Start, viewers: Any, room: RoomServer
) -> None:
    """The room service accepts a viewer's message of up to MAX_MESSAGE_BYTES and relays it
    with its `from` added: a few bytes more than that. One viewer's answer at the limit must
    not cut the kiosk's signaling, which would restart every other viewer's call."""
    pub = await start_publisher()
    good = await viewers()
    await good.wait_for(lambda: len(good.got.video) >= 3, "video", 15)
    big = await viewers(PaddedAnswerViewer)
    # Its answer is a valid one: the call is set up like any other.
    await big.wait_for(lambda: len(big.got.video) >= 3 or big.got.errors, "video or an error", 15)
    assert room.device_connects == 1 and pub.service.link.connects == 1
    assert good.offers == 1, "the other viewer's call was restarted"
    assert big.got.errors == [] and len(big.got.video) >= 3


@pytest.fixture
async def screening(run_dir: Path, bus_factory: BusFactory) -> Screening:
    return Screening(await bus_factory("screening"), EventStore.open(run_dir / "events.db", boot_id="b"))


async def test_a_join_claiming_a_seq_the_kiosk_never_reached_still_gets_events(
    camera: Camera, start_publisher: Start, viewers: Any, screening: Screening
) -> None:
    """A viewer's last_seq is the seq it acknowledged in an earlier call: one above anything
    the kiosk's store holds (another kiosk's, kept by the page for this invite; a buggy or
    hostile client) must not hide every event from that viewer, fever alerts included."""
    screening.record()
    pub = await start_publisher()
    viewer = await viewers(last_seq=1_000_000)
    await wait_until(lambda: any(v.joined and not v.catching_up for v in pub.call.viewers.values()), "join")
    seq = screening.record("elevated", 38.9)
    await viewer.wait_for(lambda: len(viewer.messages(channels.Event)) >= 2, "events", 5)
    await asyncio.sleep(0.2)
    got = [(e.seq, e.topic, e.live) for e in viewer.messages(channels.Event)]
    # Up to date as of its join (nothing this kiosk stored is the viewer's), then live events.
    assert got == [(seq, "screening.result", True), (seq, "alert.fever", True)]


async def test_an_alert_shown_in_an_earlier_call_can_be_acknowledged_in_the_next(
    camera: Camera, start_publisher: Start, viewers: Any, screening: Screening, bus_factory: BusFactory
) -> None:
    """The viewer page keeps an alert's banner and button across a new call (a network blip),
    and joins the new call with the seq it acknowledged receiving. Staff pressing the button
    then acknowledge an alert this viewer was shown: it must count."""
    pub = await start_publisher()
    acks = (await bus_factory("screen")).subscribe("alert.ack")
    first = await viewers(name="Dana")
    await wait_until(lambda: any(v.joined for v in pub.call.viewers.values()), "join", 15)
    normal = screening.record()
    seq = screening.record("elevated", 38.9)
    await first.wait_for(lambda: len(first.messages(channels.Event)) == 3, "the alert")
    await first.close()
    again = await viewers(name="Dana", last_seq=seq)

    def joined_again() -> bool:
        viewer = pub.call.viewers.get(again.peer_id or "")
        return viewer is not None and viewer.joined and not viewer.catching_up

    await wait_until(joined_again, "join again", 15)
    again.send_event(channels.AckAlert(seq=seq))
    ack = (await acks.get(5)).msg
    assert isinstance(ack, AlertAck) and (ack.seq, ack.by) == (seq, "Dana")
    assert again.messages(channels.Problem) == []
    # A seq that was no alert is still refused, whatever seq the viewer joined with.
    again.send_event(channels.AckAlert(seq=normal))
    await again.wait_for(lambda: again.messages(channels.Problem), "a refusal")
    assert again.messages(channels.Problem)[0].code == "not-allowed"


async def test_chat_with_nothing_printable_or_too_long_is_refused_to_its_sender_only(
    camera: Camera, start_publisher: Start, viewers: Any, bus_factory: BusFactory
) -> None:
    pub = await start_publisher()
    chats = (await bus_factory("screen")).subscribe("call.chat")
    dana = await viewers(name="Dana")
    sam = await viewers(name="Sam")
    await wait_until(
        lambda: len(pub.call.viewers) == 2 and all(v.joined for v in pub.call.viewers.values()), "joins"
    )
    # Control and format characters only: nothing would show on the kiosk's screen. The page
    # has already shown the line as sent, so its sender is told that it was not.
    dana.send_event(channels.Say(text="\x00\x07\u200b\u202e\r\n"))
    await dana.wait_for(lambda: dana.messages(channels.Problem), "a refusal")
    assert [(m.code, m.ref) for m in dana.messages(channels.Problem)] == [("bad-message", "chat")]
    # Too long: refused by the decoder, with the refused message's type all the same.
    dana.send_event('{"type":"chat","text":"' + "x" * 1001 + '"}')
    await dana.wait_for(lambda: len(dana.messages(channels.Problem)) == 2, "a second refusal")
    assert [(m.code, m.ref) for m in dana.messages(channels.Problem)][1] == ("bad-message", "chat")
    # Nothing reached the others; the next good line does.
    dana.send_event(channels.Say(text="hello"))
    msg = (await chats.get(5)).msg
    assert isinstance(msg, ChatMessage) and msg.text == "hello"
    await sam.wait_for(lambda: sam.messages(channels.Chat), "the good line at Sam")
    assert [m.text for m in sam.messages(channels.Chat)] == ["hello"] and not sam.messages(channels.Problem)


async def test_a_viewer_trickling_candidates_without_end_is_cut_off_alone(
    camera: Camera, start_publisher: Start, viewers: Any
) -> None:
    """Each remote candidate costs the kiosk more than the last (aioice looks through and
    sorts all it holds): a viewer sending new ones for as long as its call lasts would take
    the event loop, and every other call with it. Past a sane number, they are refused."""
    pub = await start_publisher()
    viewer = await viewers()
    other = await viewers()
    for v in (viewer, other):
        await v.wait_for(lambda v=v: len(v.got.video) >= 3, "video", 15)
    limit = call_module.MAX_REMOTE_CANDIDATES
    for n in range(limit + 5):
        text = f"candidate:{n} 1 udp 2122260223 10.9.{n >> 8}.{n & 255} {1024 + n} typ host"
        await viewer.send(p.Ice(candidate=p.IceCandidate(candidate=text, sdpMid="0")))
    await viewer.wait_for(lambda: len(viewer.got.errors) == 5, "the refusals")
    assert all(e.code == "bad-message" and "ICE candidates" in e.message for e in viewer.got.errors)
    peer = pub.call.viewers[viewer.peer_id].peer
    ice = peer.video_sender.transport.transport
    assert len(ice.getRemoteCandidates()) <= limit + 20  # the answer's own, and no more
    # The call goes on, as does the other viewer's; nobody else heard of it.
    before = len(viewer.got.video), len(other.got.video)
    await viewer.wait_for(lambda: len(viewer.got.video) > before[0] + 5, "video still flowing", 5)
    await other.wait_for(lambda: len(other.got.video) > before[1] + 5, "video still flowing", 5)
    assert other.got.errors == []


async def test_a_viewer_flooding_the_chat_is_slowed_alone(
    camera: Camera, start_publisher: Start, viewers: Any, bus_factory: BusFactory
) -> None:
    """Chat goes to the kiosk's screen and to every other viewer: one viewer sending lines as
    fast as the general message limit lets it (20 a second) would bury both. Past a short
    burst, its lines are refused to it alone; its acknowledgements still count."""
    pub = await start_publisher()
    chats = (await bus_factory("screen")).subscribe("call.chat", maxsize=1000)
    dana = await viewers(name="Dana")
    sam = await viewers(name="Sam")
    await wait_until(
        lambda: len(pub.call.viewers) == 2 and all(v.joined for v in pub.call.viewers.values()), "joins"
    )
    for n in range(30):
        dana.send_event(channels.Say(text=f"line {n}"))
    await dana.wait_for(
        lambda: len(dana.messages(channels.Problem)) == 30 - call_module.CHAT_BURST, "the refusals"
    )
    assert {(m.code, m.ref) for m in dana.messages(channels.Problem)} == {("rate-limited", "chat")}
    await sam.wait_for(lambda: len(sam.messages(channels.Chat)) == call_module.CHAT_BURST, "the burst at Sam")
    got = [(await chats.get(5)).msg.text for _ in range(call_module.CHAT_BURST)]
    assert got == [f"line {n}" for n in range(call_module.CHAT_BURST)]
    # Sam's own line is not held up by Dana's flood.
    sam.send_event(channels.Say(text="hello"))
    assert (await chats.get(5)).msg.text == "hello"
