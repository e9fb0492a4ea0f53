"""Shared by the room tests: a room service on a real socket, a browser-like admin client,
a clock tests can move, and WebSocket clients speaking the signaling protocol."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.room import protocol as p
from appliance.room.app import make_app, serving
from appliance.room.config import RoomConfig, parse_room_config
from appliance.room.services import SERVICES, Services

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Clock:
    """Real time plus an offset the test moves: expiry without waiting for it."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def room_config(tmp_path: Path, **sections: dict[str, Any]) -> RoomConfig:
    data: dict[str, Any] = {"service": {"port": 0, "database": str(tmp_path / "room.db")}}
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return parse_room_config(data, "<test>")


@dataclass
class Room:
    url: str
    app: web.Application
    clock: Clock

    @property
    def s(self) -> Services:
        return self.app[SERVICES]

    def ws_url(self, **query: str) -> str:
        base = self.url.replace("http://", "ws://") + "/api/v1/ws"
        return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")

    def add_admin(self, username: str = "alice", password: str = PASSWORD) -> None:
        self.s.accounts.add_admin(username, password, self.clock())


@asynccontextmanager
async def running_room(
    config: RoomConfig, clock: Clock | None = None, turn_secret: bytes | None = None
) -> AsyncIterator[Room]:
    clock = clock or Clock()
    app = make_app(config, clock=clock, turn_secret=turn_secret)
    async with serving(app, "127.0.0.1", 0) as url:
        yield Room(url, app, clock)


def csrf_of(page: str) -> str:
    m = _CSRF.search(page)
    assert m is not None, "no CSRF token on the page"
    return m.group(1)


@dataclass
class Page:
    status: int
    text: str
    url: str
    headers: Any


class Browser:
    """An admin's browser: a cookie jar, forms posted with the CSRF token of the page they
    came from, redirects followed."""

    def __init__(self, room: Room, local_addr: str | None = None) -> None:
        self.room = room
        connector = aiohttp.TCPConnector(local_addr=(local_addr, 0) if local_addr else None)
        # unsafe=True: keep cookies for an IP-address host (127.0.0.1), as browsers do.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector)

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str) -> Page:
        async with self.session.get(self.room.url + path) as resp:
            return Page(resp.status, await resp.text(), str(resp.url), resp.headers)

    async def post(self, path: str, data: dict[str, str], *, follow: bool = True) -> Page:
        async with self.session.post(self.room.url + path, data=data, allow_redirects=follow) as resp:
            return Page(resp.status, await resp.text(), str(resp.url), resp.headers)

    async def submit(self, page_path: str, action: str, data: dict[str, str]) -> Page:
        """Open page_path, take its CSRF token, post data to action."""
        page = await self.get(page_path)
        return await self.post(action, {**data, "csrf": csrf_of(page.text)})

    async def login(self, username: str = "alice", password: str = PASSWORD) -> Page:
        return await self.submit("/login", "/login", {"username": username, "password": password})

    async def create_room(self, name: str) -> str:
        page = await self.submit("/rooms", "/rooms", {"name": name})
        assert page.status == 200, page.text
        m = re.search(r"/rooms/(r[0-9a-f]{12})$", page.url)
        assert m is not None, page.url
        return m.group(1)

    async def create_invite(self, room_id: str, label: str = "staff", expires_h: str = "") -> str:
        page = await self.submit(
            f"/rooms/{room_id}", f"/rooms/{room_id}/invites", {"label": label, "expires_h": expires_h}
        )
        assert page.status == 201, page.text
        m = re.search(
            r'id="invite-link" class="link" readonly value="[^"]*/view/([A-Za-z0-9_-]+)"', page.text
        )
        assert m is not None
        return m.group(1)

    async def activate(self, user_code: str, room_id: str | None, action: str = "approve") -> Page:
        page = await self.submit("/activate", "/activate", {"code": user_code})
        if page.status != 200:
            return page
        data = {
            "code": re.sub(r"[^A-Z]", "", user_code.upper()),
            "action": action,
            "csrf": csrf_of(page.text),
        }
        if room_id is not None:
            data["room"] = room_id
        return await self.post("/activate/confirm", data)


async def api(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body, headers=headers) as resp:
        data = await resp.json(content_type=None) if resp.content_length != 0 else None
        return resp.status, data


async def pair_device(
    room: Room, browser: Browser, room_id: str, session: aiohttp.ClientSession, device_id: str = "kiosk-1"
) -> str:
    """The whole device flow through the real endpoints; returns the device token."""
    body = {"device_id": device_id, "model": "Raspberry Pi 4 Model B", "firmware": "1.0"}
    status, grant = await api(session, "POST", room.url + "/api/v1/device/authorize", body)
    assert status == 200, grant
    page = await browser.activate(grant["user_code"], room_id)
    assert page.status == 200 and "Kiosk paired" in page.text, page.text
    status, answer = await api(
        session, "POST", room.url + "/api/v1/device/token", {"device_code": grant["device_code"]}
    )
    assert status == 200, answer
    token: str = answer["access_token"]
    return token


async def admin_makes_room(
    room: Room, session: aiohttp.ClientSession, name: str = "Lobby", *, pair: bool = False
) -> tuple[str, str, str | None]:
    """An admin (added now) logs in, creates a room and an invite, and with pair=True pairs a
    kiosk to it: (room id, invite token, device token or None)."""
    room.add_admin()
    admin = Browser(room)
    try:
        await admin.login()
        room_id = await admin.create_room(name)
        invite = await admin.create_invite(room_id)
        token = await pair_device(room, admin, room_id, session) if pair else None
    finally:
        await admin.close()
    return room_id, invite, token


async def viewer_session(room: Room, session: aiohttp.ClientSession, invite: str) -> str:
    status, body = await api(session, "POST", room.url + "/api/v1/viewer/session", {"invite": invite})
    assert status == 200, body
    token: str = body["session"]
    return token


@dataclass
class Client:
    """A signaling client: decodes what the service sends with the protocol's own decoder."""

    ws: aiohttp.ClientWebSocketResponse
    inbox: list[p.ToClient] = field(default_factory=list)

    async def send(self, msg: p.Msg) -> None:
        await self.ws.send_str(p.encode(msg))

    async def recv(self, timeout: float = 5.0) -> p.ToClient:
        frame = await self.ws.receive(timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, frame.extra)
        return p.decode_to_client(frame.data)

    async def expect(self, kind: type[Any], timeout: float = 5.0) -> Any:
        """The next message of this type; others before it are kept in inbox."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - asyncio.get_running_loop().time()))
            if isinstance(msg, kind):
                return msg
            self.inbox.append(msg)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Read until the service closes; the close code and reason."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.ws.receive()
                if frame.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    return self.ws.close_code, str(frame.extra or "")
                if frame.type == aiohttp.WSMsgType.ERROR:
                    return self.ws.close_code, str(frame.data)


async def connect(session: aiohttp.ClientSession, url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ws = await session.ws_connect(url, headers=headers, autoclose=False, max_msg_size=0)
    return Client(ws)
