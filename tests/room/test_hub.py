"""The signaling hub alone (no sockets): routing, presence, waiting viewers, impersonation."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from appliance.room import protocol as p
from appliance.room.hub import CLOSE_POLICY, REOFFER_MIN_S, Hub, Member, RoomBusy

ROOM = p.RoomInfo(id="r1", name="Lobby")


@dataclass
class Recorder:
    """A Peer that keeps what it was sent, decoded as a client would."""

    sent: list[p.ToClient] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    def send(self, text: str) -> None:
        self.sent.append(p.decode_to_client(text))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list[p.ToClient]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def hub() -> Hub:
    return Hub(lambda peer, valid_s: [p.IceServer(urls=["stun:stun.example.org"], username=peer)])


def join_viewer(hub: Hub) -> tuple[Member, Recorder]:
    peer = Recorder()
    return hub.join_viewer(peer, ROOM, "i1"), peer


def test_viewer_waits_for_the_device_and_gets_its_offer(hub: Hub) -> None:
    viewer, vpeer = join_viewer(hub)
    welcome = vpeer.take()[0]
    assert isinstance(welcome, p.Welcome)
    assert (welcome.role, welcome.device_online, welcome.viewers) == ("viewer", False, 1)
    assert welcome.ice_servers[0].username == viewer.peer_id  # credentials per session

    dpeer = Recorder()
    device = hub.join_device(dpeer, ROOM, "d1")
    got = dpeer.take()
    assert isinstance(got[0], p.Welcome) and got[0].viewers == 1
    assert got[1:] == [p.ViewerJoined(viewer_id=viewer.peer_id)]
    assert vpeer.take() == [p.Presence(device_online=True, viewers=1)]

    assert hub.handle(device, p.Offer(to=viewer.peer_id, sdp="v=0 offer")) is None
    assert vpeer.take() == [p.Offer(sdp="v=0 offer", from_="device")]
    assert hub.handle(viewer, p.Answer(sdp="v=0 answer")) is None
    assert dpeer.take() == [p.Answer(sdp="v=0 answer", from_=viewer.peer_id)]
    cand = p.IceCandidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid="0", sdpMLineIndex=0)
    hub.handle(viewer, p.Ice(candidate=cand))
    hub.handle(device, p.Ice(to=viewer.peer_id, candidate=None))
    assert dpeer.take() == [p.Ice(candidate=cand, from_=viewer.peer_id)]
    assert vpeer.take() == [p.Ice(candidate=None, from_="device")]


def test_from_is_set_by_the_service_never_by_the_sender(hub: Hub) -> None:
    viewer, _ = join_viewer(hub)
    other, opeer = join_viewer(hub)
    dpeer = Recorder()
    hub.join_device(dpeer, ROOM, "d1")
    dpeer.take()
    opeer.take()
    hub.handle(viewer, p.Answer(sdp="x", from_=other.peer_id))
    assert dpeer.take() == [p.Answer(sdp="x", from_=viewer.peer_id)]
    err = hub.handle(viewer, p.Offer(to=other.peer_id, sdp="x"))
    assert err is not None and err.code == "bad-message"
    assert opeer.take() == []  # nothing from `viewer` reached `other`


def test_presence_and_leaving(hub: Hub) -> None:
    v1, p1 = join_viewer(hub)
    v2, _ = join_viewer(hub)
    assert p1.take()[-1] == p.Presence(device_online=False, viewers=2)
    dpeer = Recorder()
    device = hub.join_device(dpeer, ROOM, "d1")
    dpeer.take()
    hub.leave(v2)
    assert dpeer.take() == [p.ViewerLeft(viewer_id=v2.peer_id)]
    assert p1.take() == [p.Presence(device_online=True, viewers=2), p.Presence(device_online=True, viewers=1)]
    hub.leave(device)
    assert p1.take() == [p.Presence(device_online=False, viewers=1)]
    hub.leave(v1)
    assert hub.rooms == {}


def test_a_session_joining_again_replaces_its_connection(hub: Hub) -> None:
    dpeer = Recorder()
    hub.join_device(dpeer, ROOM, "d1")
    first_peer, second_peer, other_peer = Recorder(), Recorder(), Recorder()
    first = hub.join_viewer(first_peer, ROOM, "i1", session="s1")
    other = hub.join_viewer(other_peer, ROOM, "i1", session="s2")  # same invite, its own session
    dpeer.take()
    second = hub.join_viewer(second_peer, ROOM, "i1", session="s1")
    assert first_peer.closed is not None and first_peer.closed[0] == CLOSE_POLICY
    assert set(hub.rooms[ROOM.id].viewers) == {other.peer_id, second.peer_id}
    assert dpeer.take() == [p.ViewerLeft(viewer_id=first.peer_id), p.ViewerJoined(viewer_id=second.peer_id)]
    hub.leave(first)  # its connection ending later changes nothing
    assert set(hub.rooms[ROOM.id].viewers) == {other.peer_id, second.peer_id} and dpeer.take() == []
    # Alone in a room without its device, the replaced viewer's room goes and comes back.
    hub2 = Hub(lambda peer, valid_s: [])
    a = hub2.join_viewer(Recorder(), ROOM, "i1", session="s")
    b = hub2.join_viewer(Recorder(), ROOM, "i1", session="s")
    assert list(hub2.rooms[ROOM.id].viewers) == [b.peer_id] and a.peer_id != b.peer_id


def test_bye_request_offer_and_room_full(hub: Hub) -> None:
    viewer, vpeer = join_viewer(hub)
    dpeer = Recorder()
    device = hub.join_device(dpeer, ROOM, "d1")
    dpeer.take()
    vpeer.take()
    # The viewer hangs up: the device is told, and will not call it on reconnect.
    hub.handle(viewer, p.Bye())
    assert dpeer.take() == [p.ViewerLeft(viewer_id=viewer.peer_id)]
    hub.leave(device)
    hub.join_device(dpeer, ROOM, "d1")
    assert [type(m) for m in dpeer.take()] == [p.Welcome]
    # It asks again: the device gets viewer-joined again.
    hub.handle(viewer, p.RequestOffer())
    assert dpeer.take() == [p.ViewerJoined(viewer_id=viewer.peer_id)]
    device = hub.rooms[ROOM.id].device
    assert device is not None
    hub.handle(device, p.Error(to=viewer.peer_id, code="room-full", message="4 viewers already"))
    assert vpeer.take()[-1] == p.Error(code="room-full", message="4 viewers already")
    hub.handle(device, p.Bye(to=viewer.peer_id))
    assert vpeer.take() == [p.Bye()]


def test_device_errors(hub: Hub) -> None:
    dpeer = Recorder()
    device = hub.join_device(dpeer, ROOM, "d1")
    err = hub.handle(device, p.Offer(sdp="x"))
    assert err is not None and (err.code, err.ref) == ("bad-message", "offer")
    err = hub.handle(device, p.Offer(to="vnobody", sdp="x"))
    assert err is not None and (err.code, err.ref) == ("no-such-viewer", "offer")
    err = hub.handle(device, p.Answer(sdp="x"))
    assert err is not None and err.code == "bad-message"
    assert hub.handle(device, p.Ping()) is None
    assert dpeer.take()[-1] == p.Pong()


def test_viewer_talking_to_an_offline_device(hub: Hub) -> None:
    viewer, _ = join_viewer(hub)
    err = hub.handle(viewer, p.Answer(sdp="x"))
    assert err is not None and (err.code, err.ref) == ("no-device", "answer")
    assert hub.handle(viewer, p.RequestOffer()) is None  # noted; the offer comes on reconnect


def test_one_device_connection_per_room(hub: Hub) -> None:
    first, second = Recorder(), Recorder()
    hub.join_device(first, ROOM, "d1")
    hub.join_device(second, ROOM, "d1")  # the same kiosk reconnecting replaces its old socket
    assert first.closed is not None and first.closed[0] == CLOSE_POLICY
    with pytest.raises(RoomBusy):
        hub.join_device(Recorder(), ROOM, "d2")


def test_kicks(hub: Hub) -> None:
    _, vpeer = join_viewer(hub)
    dpeer = Recorder()
    hub.join_device(dpeer, ROOM, "d1")
    assert hub.device_online("d1") and hub.viewers_in(ROOM.id) == 1
    hub.kick_invite("i1", "viewer link revoked")
    hub.kick_device("d1", "device token revoked")
    assert vpeer.closed == (CLOSE_POLICY, "viewer link revoked")
    assert dpeer.closed == (CLOSE_POLICY, "device token revoked")


def test_request_offer_is_limited_per_viewer() -> None:
    """Each request-offer makes the kiosk build a new peer connection (milliseconds of a Pi's
    CPU, and the viewer's current call torn down): one viewer asking 20 times a second, which
    the connection's general message limit allows, would keep the kiosk busy for everyone."""
    now = [100.0]
    hub = Hub(lambda peer, valid_s: [], clock=lambda: now[0])
    viewer, _ = join_viewer(hub)
    other, _ = join_viewer(hub)
    dpeer = Recorder()
    hub.join_device(dpeer, ROOM, "d1")
    dpeer.take()
    assert hub.handle(viewer, p.RequestOffer()) is None
    err = hub.handle(viewer, p.RequestOffer())
    assert err is not None and (err.code, err.ref) == ("rate-limited", "request-offer")
    assert hub.handle(other, p.RequestOffer()) is None  # per viewer: the other one is not held up
    assert dpeer.take() == [p.ViewerJoined(viewer_id=viewer.peer_id), p.ViewerJoined(viewer_id=other.peer_id)]
    now[0] += REOFFER_MIN_S
    assert hub.handle(viewer, p.RequestOffer()) is None
    assert dpeer.take() == [p.ViewerJoined(viewer_id=viewer.peer_id)]
