"""The signaling hub: who is in which room, and where each message goes (appliance.room.protocol).

Pure: members are reached through a two-method Peer (send text, close), so the hub can be
driven by WebSockets (appliance.room.ws) or directly by a test. Nothing here awaits.

Per room there is at most one online device and any number of viewers. A viewer "wants a call"
from the moment it joins until it says bye or the device ends or refuses its call; a device
that (re)connects gets viewer-joined for every viewer that wants one, so a viewer waiting on an
offline kiosk gets its offer when the kiosk returns. request-offer makes a viewer want one again.
The service sets every `from` itself and never forwards a client's: a viewer cannot pose as
the device, nor as another viewer.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from appliance.room import protocol as p

log = logging.getLogger(__name__)

Role = Literal["device", "viewer"]
DEVICE_PEER_ID = "device"
# WebSocket close codes: 1008 policy (misbehaving, revoked), 1001 going away (shutdown).
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
# A viewer's request-offer makes the kiosk build a new peer connection (milliseconds of a Pi's
# CPU each) and drop the call it had: one per second per viewer is plenty for a page that
# retries with backoff, and no viewer can keep the kiosk busy by asking 20 times a second (what
# the connection's message limit alone lets through).
REOFFER_MIN_S = 1.0
# Viewer connections per room. The kiosk calls at most 32 of them at once (the publisher's own
# limit; the others wait in the room): this only stops one leaked invite link from holding any
# number of sockets, each a viewer-joined the kiosk acts on.
MAX_VIEWERS_PER_ROOM = 64


class Peer(Protocol):
    def send(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class RoomBusy(Exception):
    """Another device of this room is online (the protocol relays to one device per room)."""


class TooManyViewers(Exception):
    """The room has as many viewers connected as it may (Hub.max_viewers)."""


@dataclass(eq=False)
class Member:
    peer: Peer
    role: Role
    peer_id: str
    room: p.RoomInfo
    key: str  # the device's id, or the viewer's invite id
    wants_call: bool = True
    session: str | None = None  # a viewer's session (its token's digest): one connection each
    offer_requested: float = -math.inf  # when this viewer last sent request-offer (hub clock)


@dataclass
class RoomState:
    info: p.RoomInfo
    device: Member | None = None
    viewers: dict[str, Member] = field(default_factory=dict)

    def presence(self) -> str:
        return p.encode(p.Presence(device_online=self.device is not None, viewers=len(self.viewers)))

    def tell_viewers(self, text: str, *, but: Member | None = None) -> None:
        for viewer in self.viewers.values():
            if viewer is not but:
                viewer.peer.send(text)


def new_viewer_id() -> str:
    return "v" + secrets.token_urlsafe(9)  # [A-Za-z0-9_-], as protocol.PeerId wants


def error(code: p.ErrorCode, message: str, ref: str | None = None) -> p.Error:
    return p.Error(code=code, message=message, ref=ref)


class Hub:
    def __init__(
        self,
        ice_servers: Callable[[str, float | None], list[p.IceServer]],
        clock: Callable[[], float] = time.monotonic,
        max_viewers: int = MAX_VIEWERS_PER_ROOM,
    ) -> None:
        """ice_servers(peer, valid_s) -> the STUN/TURN servers (with fresh credentials) for that
        peer; valid_s, when given, caps how long its credentials may last (a viewer's session).
        max_viewers: connected viewers per room at most."""
        self.ice_servers = ice_servers
        self.clock = clock
        self.max_viewers = max_viewers
        self.rooms: dict[str, RoomState] = {}

    # --- joining and leaving ----------------------------------------------------------------

    def _room(self, info: p.RoomInfo) -> RoomState:
        room = self.rooms.get(info.id)
        if room is None:
            room = self.rooms[info.id] = RoomState(info)
        return room

    def join_device(self, peer: Peer, info: p.RoomInfo, device_key: str) -> Member:
        """Raises RoomBusy if a different device of this room is online."""
        room = self._room(info)
        old = room.device
        if old is not None and old.key != device_key:
            raise RoomBusy(info.id)
        member = Member(peer, "device", DEVICE_PEER_ID, info, device_key)
        room.device = member
        if old is not None:
            # The same kiosk again: its old connection is a dead TCP stream it gave up on.
            old.peer.close(CLOSE_POLICY, "replaced by a newer connection of this device")
        welcome = p.Welcome(
            role="device",
            peer_id=DEVICE_PEER_ID,
            room=info,
            ice_servers=self.ice_servers(f"device-{device_key}", None),
            device_online=True,
            viewers=len(room.viewers),
        )
        peer.send(p.encode(welcome))
        for viewer in room.viewers.values():
            if viewer.wants_call:
                peer.send(p.encode(p.ViewerJoined(viewer_id=viewer.peer_id)))
        if old is None:
            room.tell_viewers(room.presence())
        return member

    def join_viewer(
        self,
        peer: Peer,
        info: p.RoomInfo,
        invite_id: str,
        valid_s: float | None = None,
        session: str | None = None,
    ) -> Member:
        """A viewer in; valid_s: what is left of its session (its TURN credentials end with it).

        A session has one connection: a newer one replaces the one before, which leaves the
        room first (the kiosk hangs up on it). Otherwise one session could hold every place in
        the call, and a viewer whose network dropped would hold two until its old connection's
        heartbeat ran out.

        Raises TooManyViewers when the room has max_viewers others already: every session of one
        invite link may connect, and a leaked link must not let one client hold any number
        of sockets (each one a viewer-joined the kiosk acts on)."""
        room = self._room(info)
        others = sum(1 for v in room.viewers.values() if session is None or v.session != session)
        if others >= self.max_viewers:
            raise TooManyViewers(info.id)  # others >= 1 here: the room state is not left empty
        if session is not None:
            for old in [v for v in room.viewers.values() if v.session == session]:
                self.leave(old)
                old.peer.close(CLOSE_POLICY, "replaced by a newer connection of this viewer session")
            room = self._room(info)  # leaving may have emptied and dropped it
        member = Member(peer, "viewer", new_viewer_id(), info, invite_id, session=session)
        room.viewers[member.peer_id] = member
        welcome = p.Welcome(
            role="viewer",
            peer_id=member.peer_id,
            room=info,
            ice_servers=self.ice_servers(member.peer_id, valid_s),
            device_online=room.device is not None,
            viewers=len(room.viewers),
        )
        peer.send(p.encode(welcome))
        if room.device is not None:
            room.device.peer.send(p.encode(p.ViewerJoined(viewer_id=member.peer_id)))
        room.tell_viewers(room.presence(), but=member)
        return member

    def leave(self, member: Member) -> None:
        room = self.rooms.get(member.room.id)
        if room is None:
            return
        if member.role == "device":
            if room.device is not member:
                return  # replaced already
            room.device = None
        else:
            if room.viewers.pop(member.peer_id, None) is None:
                return
            if room.device is not None:
                room.device.peer.send(p.encode(p.ViewerLeft(viewer_id=member.peer_id)))
        room.tell_viewers(room.presence())
        if room.device is None and not room.viewers:
            del self.rooms[member.room.id]

    # --- messages ---------------------------------------------------------------------------

    def handle(self, member: Member, msg: p.ToService) -> p.Error | None:
        """Route one decoded message; returns the error to send back to its sender, if any."""
        if isinstance(msg, p.Ping):
            member.peer.send(p.encode(p.Pong()))
            return None
        room = self.rooms.get(member.room.id)
        if room is None:  # cannot happen while the member is joined; be safe, not sorry
            return error("internal", "not in a room")
        if member.role == "device":
            return self._from_device(room, msg)
        return self._from_viewer(room, member, msg)

    def _from_device(self, room: RoomState, msg: p.ToService) -> p.Error | None:
        out: p.Msg
        if isinstance(msg, p.Offer):
            out = p.Offer(sdp=msg.sdp, from_=DEVICE_PEER_ID)
        elif isinstance(msg, p.Ice):
            out = p.Ice(candidate=msg.candidate, from_=DEVICE_PEER_ID)
        elif isinstance(msg, p.Bye):
            out = p.Bye()
        elif isinstance(msg, p.Error):
            out = p.Error(code=msg.code, message=msg.message)
        else:
            return error("bad-message", f"a device does not send {_type(msg)}", _type(msg))
        if msg.to is None:
            return error("bad-message", f"{_type(msg)} from a device needs `to`: the viewer", _type(msg))
        viewer = room.viewers.get(msg.to)
        if viewer is None:
            return error("no-such-viewer", f"no viewer {msg.to} in this room", _type(msg))
        if isinstance(msg, p.Bye | p.Error):
            viewer.wants_call = False  # the device ended or refused this call
        viewer.peer.send(p.encode(out))
        return None

    def _from_viewer(self, room: RoomState, member: Member, msg: p.ToService) -> p.Error | None:
        if isinstance(msg, p.Error):
            log.debug("viewer %s reported %s: %s", member.peer_id, msg.code, msg.message[:200])
            return None
        if isinstance(msg, p.Offer):
            return error("bad-message", "the device makes the offers; a viewer answers", "offer")
        device = room.device
        if isinstance(msg, p.RequestOffer):
            now = self.clock()
            if now - member.offer_requested < REOFFER_MIN_S:
                return error("rate-limited", "a new call at most once a second", "request-offer")
            member.offer_requested = now
            member.wants_call = True
            # With the device offline, nothing to do now: it gets viewer-joined when it returns.
            if device is not None:
                device.peer.send(p.encode(p.ViewerJoined(viewer_id=member.peer_id)))
            return None
        if isinstance(msg, p.Bye):
            was = member.wants_call
            member.wants_call = False
            if device is not None and was:
                device.peer.send(p.encode(p.ViewerLeft(viewer_id=member.peer_id)))
            return None
        out: p.Msg
        if isinstance(msg, p.Answer):
            out = p.Answer(sdp=msg.sdp, from_=member.peer_id)
        elif isinstance(msg, p.Ice):
            out = p.Ice(candidate=msg.candidate, from_=member.peer_id)
        else:
            return error("bad-message", f"a viewer does not send {_type(msg)}", _type(msg))
        if device is None:
            return error("no-device", "the kiosk is offline", _type(msg))
        device.peer.send(p.encode(out))
        return None

    # --- admin actions ----------------------------------------------------------------------

    def device_online(self, device_key: str) -> bool:
        return any(r.device is not None and r.device.key == device_key for r in self.rooms.values())

    def viewers_in(self, room_id: str) -> int:
        room = self.rooms.get(room_id)
        return 0 if room is None else len(room.viewers)

    def kick_device(self, device_key: str, reason: str) -> None:
        for room in list(self.rooms.values()):
            if room.device is not None and room.device.key == device_key:
                room.device.peer.close(CLOSE_POLICY, reason)

    def kick_invite(self, invite_id: str, reason: str) -> None:
        for room in list(self.rooms.values()):
            for viewer in list(room.viewers.values()):
                if viewer.key == invite_id:
                    viewer.peer.close(CLOSE_POLICY, reason)

    def kick_room(self, room_id: str, reason: str, code: int = CLOSE_POLICY) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        for member in [room.device, *room.viewers.values()]:
            if member is not None:
                member.peer.close(code, reason)

    def close_all(self, reason: str) -> None:
        for room_id in list(self.rooms):
            self.kick_room(room_id, reason, CLOSE_GOING_AWAY)


def _type(msg: p.Msg) -> str:
    return str(type(msg).__struct_config__.tag)
