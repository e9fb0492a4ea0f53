"""The kiosk's pairing module against the real room service and a real bus broker."""

from __future__ import annotations

import asyncio
import contextlib
import re
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from room.helpers import Browser, Room, api, room_config, running_room

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient, Subscription
from appliance.bus.topics import Empty, Ok, PairingStart, PairingStatus
from appliance.config import AppConfig, BusConfig, PathsConfig, PublisherConfig
from appliance.pairing.client import RateLimited, RoomClient, RoomServiceError
from appliance.pairing.credentials import (
    DeviceCredentials,
    credentials_path,
    load_credentials,
    save_credentials,
)
from appliance.pairing.service import Pairing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Rig:
    room: Room
    admin: Browser
    room_id: str
    state: Path
    bus: BusClient  # the kiosk's daemon's connection
    observer: Subscription  # pairing.status as another daemon sees it
    sock: Path

    def config(self, room_url: str | None = "default") -> AppConfig:
        return AppConfig(
            paths=PathsConfig(state_dir=self.state),
            bus=BusConfig(socket=self.sock),
            publisher=PublisherConfig(room_url=self.room.url if room_url == "default" else room_url),
        )

    async def status(
        self, want: Callable[[PairingStatus], bool], timeout: float = 15.0
    ) -> list[PairingStatus]:
        """Statuses seen up to and including the first one `want` accepts."""
        seen: list[PairingStatus] = []
        async with asyncio.timeout(timeout):
            while True:
                rx = await self.observer.get()
                assert isinstance(rx.msg, PairingStatus)
                seen.append(rx.msg)
                if want(rx.msg):
                    return seen

    async def code(self) -> PairingStatus:
        return (await self.status(lambda s: s.state == "code"))[-1]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - the condition is in SQLite, nothing to await on
            await asyncio.sleep(0.05)


def states(seen: list[PairingStatus]) -> list[str]:
    out: list[str] = []
    for s in seen:
        if not out or out[-1] != s.state:
            out.append(s.state)
    return out


@pytest.fixture
async def rig(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    sock = tmp_path_factory.mktemp("bus") / "bus.sock"
    broker = Broker()
    await broker.start(sock)
    config = room_config(tmp_path / "room", pairing={"interval_s": 1})
    async with running_room(config) as room:
        room.add_admin()
        admin = Browser(room)
        await admin.login()
        room_id = await admin.create_room("Lobby")
        bus = BusClient(sock, "publisher")
        await bus.connect()
        watcher = BusClient(sock, "observer")
        await watcher.connect()
        try:
            yield Rig(
                room, admin, room_id, tmp_path / "state", bus, watcher.subscribe("pairing.status"), sock
            )
        finally:
            await watcher.close()
            await bus.close()
            await admin.close()
    await broker.close()


@pytest.fixture
async def running(rig: Rig) -> AsyncIterator[Callable[..., Pairing]]:
    tasks: list[asyncio.Task[None]] = []

    def start(config: AppConfig | None = None, **kwargs: float) -> Pairing:
        pairing = Pairing(config or rig.config(), rig.bus, **kwargs)  # type: ignore[arg-type]
        pairing.serve()
        tasks.append(asyncio.get_running_loop().create_task(pairing.run()))
        return pairing

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_pairs_publishes_each_state_and_stores_the_token_0600(
    rig: Rig, running: Callable[..., Pairing]
) -> None:
    pairing = running()
    seen = await rig.status(lambda s: s.state == "code")
    code = seen[-1]
    assert code.user_code and re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", code.user_code)
    assert code.verification_uri_complete == f"{rig.room.url}/activate?code={code.user_code}"
    assert code.expires_at is not None
    page = await rig.admin.activate(code.user_code, rig.room_id)
    assert "Kiosk paired" in page.text
    seen += await rig.status(lambda s: s.state == "paired")
    assert states(seen) == ["unpaired", "code", "paired"]
    assert seen[-1].room_name == "Lobby"

    path = credentials_path(rig.state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = load_credentials(rig.state)
    assert creds is not None and creds == pairing.credentials
    assert (creds.room_url, creds.room_id, creds.room_name) == (rig.room.url, rig.room_id, "Lobby")
    async with aiohttp.ClientSession() as http:
        assert (await api(http, "GET", rig.room.url + "/api/v1/device/me", token=creds.token))[0] == 200

        # pairing.unpair over the bus: the kiosk forgets the token and the service revokes it.
        reply = await rig.bus.request("pairing.unpair", Empty())
        assert isinstance(reply, Ok) and reply.ok and "revoked" in reply.detail
        last = (await rig.status(lambda s: s.state == "unpaired"))[-1]
        assert last.reason == "unpaired on request"
        assert not path.exists() and pairing.credentials is None
        assert (await api(http, "GET", rig.room.url + "/api/v1/device/me", token=creds.token))[0] == 401


async def test_a_revoked_token_sends_the_kiosk_back_to_unpaired(
    rig: Rig, running: Callable[..., Pairing]
) -> None:
    device, token = rig.room.s.devices.add(rig.room_id, "kiosk-1", "Pi", "1", rig.room.clock())
    save_credentials(
        rig.state,
        DeviceCredentials(
            room_url=rig.room.url, token=token, room_id=rig.room_id, room_name="Lobby", paired_at=0
        ),
    )
    pairing = running()
    assert (await rig.status(lambda s: s.state == "paired"))[-1].room_name == "Lobby"
    rig.room.s.devices.revoke(device.id, rig.room.clock())
    # The publisher's WebSocket got 401 and says so; the service confirms.
    pairing.report_unauthorized()
    last = (await rig.status(lambda s: s.state == "unpaired"))[-1]
    assert "revoked" in last.reason
    assert load_credentials(rig.state) is None
    # It stays unpaired (no new code on its own) until someone starts pairing again.
    await asyncio.sleep(1.5)
    assert pairing.status is not None and pairing.status.state == "unpaired"
    reply = await rig.bus.request("pairing.start", PairingStart())
    assert reply.ok
    assert (await rig.code()).user_code


async def test_the_token_is_checked_periodically(rig: Rig, running: Callable[..., Pairing]) -> None:
    device, token = rig.room.s.devices.add(rig.room_id, "kiosk-1", "Pi", "1", rig.room.clock())
    save_credentials(
        rig.state,
        DeviceCredentials(
            room_url=rig.room.url, token=token, room_id=rig.room_id, room_name="Old name", paired_at=0
        ),
    )
    running(check_every_s=0.3)
    # The first check learns the room's current name.
    assert (await rig.status(lambda s: s.room_name == "Lobby"))[-1].state == "paired"
    rig.room.s.devices.revoke(device.id, rig.room.clock())
    assert "revoked" in (await rig.status(lambda s: s.state == "unpaired"))[-1].reason


async def test_an_expired_code_is_replaced(rig: Rig, running: Callable[..., Pairing]) -> None:
    running()
    first = await rig.code()
    rig.room.clock.advance(601)
    second = await rig.code()
    assert second.user_code != first.user_code
    await rig.admin.activate(second.user_code or "", rig.room_id)
    assert (await rig.status(lambda s: s.state == "paired"))[-1].room_name == "Lobby"


async def test_refused_pairing_is_an_error_until_started_again(
    rig: Rig, running: Callable[..., Pairing]
) -> None:
    running()
    code = await rig.code()
    await rig.admin.activate(code.user_code or "", None, action="deny")
    last = (await rig.status(lambda s: s.state == "error"))[-1]
    assert "refused" in last.reason
    assert (await rig.bus.request("pairing.start", PairingStart())).ok
    assert (await rig.code()).user_code != code.user_code


async def test_slow_down_is_honoured(rig: Rig, running: Callable[..., Pairing]) -> None:
    conn = rig.room.s.conn
    running()
    await rig.code()

    def code_row() -> tuple[float | None, float]:
        row = conn.execute("SELECT last_poll, interval FROM device_codes").fetchone()
        return row[0], row[1]

    await until(lambda: code_row()[0] is not None)  # the first poll, a second after the code
    # Make the service see the next poll as too early: it answers slow_down, interval 1 -> 6 s.
    rig.room.clock.advance(-2)
    await until(lambda: code_row()[1] != 1)
    first_slow = code_row()
    assert first_slow[1] == 6
    # A kiosk that ignored slow_down would poll again within 1 s and get another (interval 11).
    await asyncio.sleep(7.5)
    last_poll, interval = code_row()
    assert interval == 6, "polled again before the new interval"
    assert last_poll is not None and first_slow[0] is not None and last_poll > first_slow[0]


async def test_without_a_room_url_it_waits_for_pairing_start(
    rig: Rig, running: Callable[..., Pairing]
) -> None:
    running(rig.config(room_url=None))
    first = (await rig.status(lambda s: True))[-1]
    assert first.state == "unpaired" and "publisher.room_url" in first.reason
    bad = await rig.bus.request("pairing.start", PairingStart())
    assert not bad.ok and "no room URL" in bad.detail
    bad = await rig.bus.request("pairing.start", PairingStart(room_url="ftp://nope"))
    assert not bad.ok
    ok = await rig.bus.request("pairing.start", PairingStart(room_url=rig.room.url))
    assert ok.ok
    code = await rig.code()
    await rig.admin.activate(code.user_code or "", rig.room_id)
    await rig.status(lambda s: s.state == "paired")
    again = await rig.bus.request("pairing.start", PairingStart(room_url=rig.room.url))
    assert not again.ok and "unpair first" in again.detail


async def test_unreachable_service_is_an_error_then_recovers(
    rig: Rig, running: Callable[..., Pairing]
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    pairing = running(rig.config(room_url=dead), retry_max_s=0.5)
    assert "cannot reach" in (await rig.status(lambda s: s.state == "error"))[-1].reason
    assert pairing.start(rig.room.url).ok
    assert (await rig.code()).user_code


async def test_appliance_pair_from_a_shell(rig: Rig) -> None:
    env = {"APPLIANCE_STATE_DIR": str(rig.state), "PATH": "/usr/bin:/bin"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "pair",
        "--room-url",
        rig.room.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "appliance pair ended before showing a code"
                if m := re.search(r"Code: ([A-Z]{4}-[A-Z]{4})", line):
                    break
        page = await rig.admin.activate(m.group(1), rig.room_id)
        assert "Kiosk paired" in page.text
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "Paired with room 'Lobby'" in out.decode()
    creds = load_credentials(rig.state)
    assert creds is not None and creds.token not in out.decode() + err.decode()
    assert stat.S_IMODE(credentials_path(rig.state).stat().st_mode) == 0o600


# --- a room service answering nonsense: a fake one, on a local port ----------------------------


@dataclass
class Fake:
    url: str
    hits: dict[str, int]


@pytest.fixture
async def fake_room() -> AsyncIterator[Callable[..., Awaitable[Fake]]]:
    """A room service whose answers the test chooses: authorize(request) and token(request)."""
    runners: list[web.AppRunner] = []

    async def start(authorize: Handler, token: Handler) -> Fake:
        hits = {"authorize": 0, "token": 0}

        def counted(name: str, handler: Handler) -> Handler:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                hits[name] += 1
                return await handler(request)

            return wrapped

        app = web.Application()
        app.router.add_post("/api/v1/device/authorize", counted("authorize", authorize))
        app.router.add_post("/api/v1/device/token", counted("token", token))
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return Fake(f"http://127.0.0.1:{port}", hits)

    yield start
    for runner in runners:
        await runner.cleanup()


def grant(**overrides: object) -> dict[str, object]:
    return {
        "device_code": "d" * 32,
        "user_code": "WDJB-MJHT",
        "verification_uri": "http://room/activate",
        "verification_uri_complete": "http://room/activate?code=WDJB-MJHT",
        "expires_in": 600,
        "interval": 5,
        **overrides,
    }


async def pending(request: web.Request) -> web.Response:
    return web.json_response({"error": "authorization_pending"}, status=400)


@pytest.mark.parametrize("interval", [0, -1])
async def test_a_zero_or_negative_poll_interval_does_not_hammer_the_service(
    tmp_path: Path, fake_room: Callable[..., Awaitable[Fake]], interval: int
) -> None:
    async def authorize(request: web.Request) -> web.Response:
        return web.json_response(grant(interval=interval))

    fake = await fake_room(authorize, pending)
    config = AppConfig(paths=PathsConfig(state_dir=tmp_path), publisher=PublisherConfig(room_url=fake.url))
    task = asyncio.get_running_loop().create_task(Pairing(config).run())
    try:
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert fake.hits["authorize"] == 1
    assert 1 <= fake.hits["token"] <= 2, fake.hits


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-inf"])
async def test_a_retry_after_that_is_not_a_number_of_seconds_is_not_forever(
    fake_room: Callable[..., Awaitable[Fake]], value: str
) -> None:
    async def busy(request: web.Request) -> web.Response:
        return web.json_response({}, status=429, headers={"Retry-After": value})

    fake = await fake_room(busy, busy)
    async with aiohttp.ClientSession() as session:
        client = RoomClient(fake.url, session)
        for answer in (await client.authorize("kiosk-1", "Pi", "1"), await client.poll("d" * 32)):
            assert isinstance(answer, RateLimited)
            assert 1.0 <= answer.retry_after <= 3600.0, answer


async def test_a_token_stored_by_appliance_pair_is_taken_up_while_showing_a_code(
    rig: Rig, running: Callable[..., Pairing]
) -> None:
    """The publisher is showing its own code when a technician pairs from a shell instead
    (`appliance pair` stores the token): the publisher uses that token, and its code leaves the
    screen, rather than showing codes for a pairing that is done until it restarts."""
    pairing = running()
    await rig.code()
    _, token = rig.room.s.devices.add(rig.room_id, "kiosk-1", "Pi", "1", rig.room.clock())
    creds = DeviceCredentials(
        room_url=rig.room.url, token=token, room_id=rig.room_id, room_name="Lobby", paired_at=1
    )
    save_credentials(rig.state, creds)
    last = (await rig.status(lambda s: s.state != "code", timeout=10))[-1]
    assert last.state == "paired" and last.room_name == "Lobby"
    assert pairing.credentials == creds


async def test_a_host_name_that_cannot_be_looked_up_is_a_room_service_error() -> None:
    """A hand-edited credentials file (or an older one) with a doubled dot in its room URL:
    the token check must fail as the room service being unreachable, not end the task with a
    UnicodeError from the IDNA codec (the publisher would restart over and over)."""
    async with aiohttp.ClientSession() as session:
        client = RoomClient("https://rooms..example.org", session)
        with pytest.raises(RoomServiceError, match="unreachable"):
            await client.me("rdt_secret")


def test_appliance_pair_with_a_state_dir_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A technician runs `appliance pair` where the state directory cannot be made or written
    (a wrong paths.state_dir, another user's directory): one line saying so, before any code is
    shown (an admin would approve a code whose token could not be stored), not a traceback."""
    from appliance.cli import main as cli_main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "appliance.toml"
    config.write_text("")
    monkeypatch.setenv("APPLIANCE_STATE_DIR", str(blocker / "state"))
    # Nothing listens here: the command must stop before it asks the room service anything.
    assert cli_main(["pair", "--room-url", "http://127.0.0.1:9", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "Code:" not in out
    assert err.startswith("error: ") and str(blocker / "state") in err
    assert "Traceback" not in err
