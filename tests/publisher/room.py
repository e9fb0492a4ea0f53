"""A small room service for the publisher's tests, following appliance.room.protocol.

Real aiohttp, real WebSockets, the protocol's messages and rules (the device offers, the
service sets `from`, a device's error or bye goes to the viewer named in `to`, a (re)connecting
device gets viewer-joined for every viewer waiting for a call). No database or accounts: one
room, one device token, a set of invites. It also serves the viewer page the way the hosted
service does (/view/<invite>, /static/...), so a real browser can be pointed at it.

`kill()` drops every connection and stops listening, as a crashed service would; `start()`
again on the same port brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

from appliance.room import protocol as p

STATIC = Path(__file__).resolve().parents[2] / "appliance" / "room" / "static"
DEVICE_TOKEN = "test-device-token"
ROOM = p.RoomInfo(id="room1", name="Front door")


@dataclass(eq=False)
class Member:
    ws: web.WebSocketResponse
    role: str
    peer_id: str
    wants_call: bool = True


@dataclass
class RoomServer:
    host: str = "127.0.0.1"
    port: int = 0
    invites: set[str] = field(default_factory=lambda: {"invite1"})
    ice_servers: list[p.IceServer] = field(default_factory=list)
    device: Member | None = None
    viewers: dict[str, Member] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    from_device: deque[p.ToService] = field(default_factory=lambda: deque(maxlen=100))
    offers_relayed: int = 0
    device_connects: int = 0
    _runner: web.AppRunner | None = None
    _sockets: set[web.WebSocketResponse] = field(default_factory=set)
    _device_online: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/v1/viewer/session", self._session)
        app.router.add_get("/api/v1/device/me", self._me)
        app.router.add_get("/api/v1/ws", self._ws)
        app.router.add_get("/view/{invite}", self._page)
        app.router.add_static("/static/", STATIC)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def kill(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1011, message=b"service died")
        self.device = None
        self._device_online.clear()
        self.viewers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- http -------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "viewer.html")

    async def _me(self, request: web.Request) -> web.Response:
        # What pairing checks its token against (appliance.room.api_types.DeviceMe).
        if request.headers.get("Authorization") != f"Bearer {DEVICE_TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        device = {"id": "d1", "device_id": "kiosk-test", "model": "test", "firmware": "test"}
        return web.json_response({"device": device, "room": {"id": ROOM.id, "name": ROOM.name}})

    async def _session(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("invite") not in self.invites:
            return web.json_response({"error": "invalid_invite"}, status=403)
        token = secrets.token_urlsafe(16)
        self.sessions[token] = body["invite"]
        return web.json_response(
            {"session": token, "expires_in": 3600, "room": {"id": ROOM.id, "name": ROOM.name}}
        )

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        session = request.query.get("session")
        if auth == f"Bearer {DEVICE_TOKEN}":
            role = "device"
        elif session in self.sessions:
            role = "viewer"
        else:
            return web.json_response({"error": "unauthorized"}, status=401)
        ws = web.WebSocketResponse(max_msg_size=4 * p.MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        self._sockets.add(ws)
        member = Member(ws, role, "device" if role == "device" else "v" + secrets.token_urlsafe(6))
        try:
            await self._join(member)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    decoded = p.decode_to_service(msg.data)
                except p.ProtocolError as exc:
                    await ws.send_str(p.encode(p.Error(code=exc.code, message=str(exc))))
                    continue
                await self._route(member, decoded)
        finally:
            self._sockets.discard(ws)
            await self._leave(member)
        return ws

    # --- the protocol -----------------------------------------------------------------------

    def _welcome(self, member: Member) -> p.Welcome:
        return p.Welcome(
            role="device" if member.role == "device" else "viewer",
            peer_id=member.peer_id,
            room=ROOM,
            ice_servers=self.ice_servers,
            device_online=self.device is not None,
            viewers=len(self.viewers),
        )

    async def _join(self, member: Member) -> None:
        if member.role == "device":
            if self.device is not None:
                await self.device.ws.close(code=1008, message=b"replaced")
            self.device = member
            self._device_online.set()
            self.device_connects += 1
            await member.ws.send_str(p.encode(self._welcome(member)))
            for viewer in self.viewers.values():
                if viewer.wants_call:
                    await member.ws.send_str(p.encode(p.ViewerJoined(viewer_id=viewer.peer_id)))
        else:
            self.viewers[member.peer_id] = member
            await member.ws.send_str(p.encode(self._welcome(member)))
            if self.device is not None:
                await self.device.ws.send_str(p.encode(p.ViewerJoined(viewer_id=member.peer_id)))

    async def _leave(self, member: Member) -> None:
        if member.role == "device":
            if self.device is member:
                self.device = None
                self._device_online.clear()
        elif self.viewers.pop(member.peer_id, None) is not None and self.device is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.device.ws.send_str(p.encode(p.ViewerLeft(viewer_id=member.peer_id)))

    async def _route(self, member: Member, msg: p.ToService) -> None:
        if isinstance(msg, p.Ping):
            await member.ws.send_str(p.encode(p.Pong()))
            return
        if member.role == "device":
            self.from_device.append(msg)
            to = getattr(msg, "to", None)
            viewer = self.viewers.get(to or "")
            if viewer is None:
                await member.ws.send_str(p.encode(p.Error(code="no-such-viewer", message=str(to))))
                return
            out: p.Msg
            if isinstance(msg, p.Offer):
                self.offers_relayed += 1
                out = p.Offer(sdp=msg.sdp, from_="device")
            elif isinstance(msg, p.Ice):
                out = p.Ice(candidate=msg.candidate, from_="device")
            elif isinstance(msg, p.Error):
                viewer.wants_call = False
                out = p.Error(code=msg.code, message=msg.message)
            elif isinstance(msg, p.Bye):
                viewer.wants_call = False
                out = p.Bye()
            else:
                return
            await viewer.ws.send_str(p.encode(out))
            return
        device = self.device
        if isinstance(msg, p.RequestOffer):
            member.wants_call = True
            if device is not None:
                await device.ws.send_str(p.encode(p.ViewerJoined(viewer_id=member.peer_id)))
        elif isinstance(msg, p.Bye):
            member.wants_call = False
            if device is not None:
                await device.ws.send_str(p.encode(p.ViewerLeft(viewer_id=member.peer_id)))
        elif isinstance(msg, p.Answer | p.Ice) and device is not None:
            if isinstance(msg, p.Answer):
                out = p.Answer(sdp=msg.sdp, from_=member.peer_id)
            else:
                out = p.Ice(candidate=msg.candidate, from_=member.peer_id)
            await device.ws.send_str(p.encode(out))

    async def wait_device(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._device_online.wait()
