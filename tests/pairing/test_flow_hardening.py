"""The device flow against a room service that misbehaves or is interrupted mid-request: a
fake service on a local port whose every answer the test holds back or chooses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from appliance.bus.topics import PairingStatus
from appliance.config import AppConfig, PathsConfig, PublisherConfig
from appliance.pairing.credentials import load_credentials
from appliance.pairing.service import Pairing

from .test_service import grant

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN = "rdt_issued_after_the_unpair"


def token_answer() -> web.Response:
    return web.json_response(
        {"access_token": TOKEN, "token_type": "Bearer", "room": {"id": "r1", "name": "Lobby"}}
    )


async def pending(request: web.Request) -> web.Response:
    return web.json_response({"error": "authorization_pending"}, status=400)


@dataclass
class Fake:
    url: str
    hits: dict[str, int] = field(default_factory=lambda: {"authorize": 0, "token": 0, "revoke": 0})
    revoked: list[str] = field(default_factory=list)
    arrived: dict[str, asyncio.Event] = field(
        default_factory=lambda: {"authorize": asyncio.Event(), "token": asyncio.Event()}
    )


@pytest.fixture
async def fake_room() -> AsyncIterator[Callable[[Handler, Handler], Awaitable[Fake]]]:
    runners: list[web.AppRunner] = []

    async def start(authorize: Handler, token: Handler) -> Fake:
        fake = Fake("")

        def counted(name: str, handler: Handler) -> Handler:
            async def wrapped(request: web.Request) -> web.StreamResponse:
                fake.hits[name] += 1
                fake.arrived[name].set()
                return await handler(request)

            return wrapped

        async def revoke(request: web.Request) -> web.Response:
            fake.hits["revoke"] += 1
            fake.revoked.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/api/v1/device/authorize", counted("authorize", authorize))
        app.router.add_post("/api/v1/device/token", counted("token", token))
        app.router.add_post("/api/v1/device/revoke", revoke)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return fake

    yield start
    for runner in runners:
        await runner.cleanup()


class Watched(Pairing):
    """Pairing that says when its loop has come to rest (idle: nothing more to do)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: list[PairingStatus] = []
        self.on_status = self.seen.append
        self.idle = asyncio.Event()

    async def _idle(self, gen: int) -> None:
        self.idle.set()
        await super()._idle(gen)


@contextlib.asynccontextmanager
async def running(pairing: Pairing) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(pairing.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def config(state: Path, url: str) -> AppConfig:
    return AppConfig(paths=PathsConfig(state_dir=state), publisher=PublisherConfig(room_url=url))


async def test_unpair_while_a_code_is_being_asked_for_leaves_no_code_on_screen(
    tmp_path: Path, fake_room: Callable[[Handler, Handler], Awaitable[Fake]]
) -> None:
    """Unpair (or a new pairing.start) while the request for a code is out: the code that
    comes back afterwards belongs to a flow that is over. Published, it would sit on the screen
    as the retained pairing.status of a kiosk that is unpaired and not pairing at all."""
    release = asyncio.Event()

    async def slow_authorize(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(grant())

    fake = await fake_room(slow_authorize, pending)
    pairing = Watched(config(tmp_path, fake.url))
    async with running(pairing), asyncio.timeout(10):
        await fake.arrived["authorize"].wait()
        assert (await pairing.unpair()).ok
        release.set()
        await pairing.idle.wait()
    assert pairing.status is not None and pairing.status.state == "unpaired", pairing.seen
    assert all(s.state != "code" for s in pairing.seen)


async def test_a_token_granted_after_unpair_is_revoked_not_kept_or_left_live(
    tmp_path: Path, fake_room: Callable[[Handler, Handler], Awaitable[Fake]]
) -> None:
    """The admin approves the code just as the kiosk is unpaired: the poll that was out comes
    back with a token. The kiosk must not store it (it was told to unpair), and must not leave
    it live on the service either, where the room would show a kiosk that is paired."""
    release = asyncio.Event()

    async def authorize(request: web.Request) -> web.Response:
        return web.json_response(grant(interval=1))

    async def slow_token(request: web.Request) -> web.Response:
        await release.wait()
        return token_answer()

    fake = await fake_room(authorize, slow_token)
    pairing = Watched(config(tmp_path, fake.url))
    async with running(pairing), asyncio.timeout(10):
        await fake.arrived["token"].wait()
        await pairing.unpair()
        release.set()
        await pairing.idle.wait()
        while not fake.revoked:  # noqa: ASYNC110 - the fake service's record is the signal
            await asyncio.sleep(0.02)
    assert fake.revoked == [TOKEN]
    assert load_credentials(tmp_path) is None and pairing.credentials is None
    assert TOKEN not in repr(pairing.seen)


class Paced(Pairing):
    """Pairing whose waits are recorded and take no time; it stops after `limit` of them."""

    def __init__(self, *args: object, limit: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.waits: list[float] = []
        self.limit = limit

    async def _sleep(self, seconds: float, gen: int) -> bool:
        self.waits.append(seconds)
        await asyncio.sleep(0)
        return len(self.waits) >= self.limit


@pytest.mark.parametrize(
    "failure",
    [
        web.Response(status=503, text="<html>Bad gateway</html>", content_type="text/html"),
        web.Response(status=200, text="<html>captive portal</html>", content_type="text/html"),
        web.Response(status=400, text='{"nonsense": true}', content_type="application/json"),
    ],
    ids=["5xx-html", "200-html", "400-garbage"],
)
async def test_failing_polls_back_off_then_resume_the_interval(
    tmp_path: Path, fake_room: Callable[[Handler, Handler], Awaitable[Fake]], failure: web.Response
) -> None:
    """RFC 8628 3.5: a client that cannot reach the service backs off rather than polling a
    room service that is down (or a captive portal answering HTML) at the same pace for the
    whole life of the code; once an answer makes sense again, the interval is back."""
    answers = 0

    async def token(request: web.Request) -> web.StreamResponse:
        nonlocal answers
        answers += 1
        if answers <= 4:
            return web.Response(status=failure.status, text=failure.text, content_type=failure.content_type)
        return await pending(request)

    fake = await fake_room(lambda r: _json(grant(interval=5)), token)
    pairing = Paced(config(tmp_path, fake.url), limit=7, retry_max_s=30.0)
    async with aiohttp.ClientSession() as session, asyncio.timeout(10):
        assert await pairing._flow(session, fake.url, pairing._gen) == "stopped"
    # before poll 1, then after each of 4 failures, then after a good answer
    assert pairing.waits[0] == 5.0
    failing = pairing.waits[1:5]
    assert failing == sorted(failing) and failing[-1] > failing[0] > 5.0, pairing.waits
    assert max(pairing.waits) <= 30.0
    assert pairing.waits[5] == 5.0, pairing.waits
    assert fake.hits["authorize"] == 1  # the code on screen stays: only the pace changes


async def _json(body: dict[str, object]) -> web.Response:
    return web.json_response(body)


async def test_a_clock_set_while_a_code_shows_moves_its_expiry_with_it(
    tmp_path: Path, fake_room: Callable[[Handler, Handler], Awaitable[Fake]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi has no RTC: it boots with an old clock and NTP sets it minutes later, often while
    the first code shows. The code's life is measured on the monotonic clock, but expires_at
    on pairing.status is Unix time: left as it was, the screen would count down to a time long
    past (or hours ahead). It is published again, on the new clock."""
    import appliance.pairing.service as service

    class Clock:
        now = 1_000_000.0

        def time(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(service, "time", clock)

    class Jumping(Paced):
        async def _sleep(self, seconds: float, gen: int) -> bool:
            clock.now += 3600.0 if len(self.waits) == 1 else 0.0  # NTP, during the second wait
            return await super()._sleep(seconds, gen)

    fake = await fake_room(lambda r: _json(grant(interval=5, expires_in=600)), pending)
    pairing = Jumping(config(tmp_path, fake.url), limit=4)
    seen: list[PairingStatus] = []
    pairing.on_status = seen.append
    async with aiohttp.ClientSession() as session, asyncio.timeout(10):
        assert await pairing._flow(session, fake.url, pairing._gen) == "stopped"
    codes = [s for s in seen if s.state == "code"]
    assert codes[0].expires_at == pytest.approx(1_000_600.0)
    assert codes[-1].expires_at == pytest.approx(1_000_600.0 + 3600.0, abs=2.0)
    assert {s.user_code for s in codes} == {"WDJB-MJHT"} and fake.hits["authorize"] == 1
