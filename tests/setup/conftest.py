"""The setup daemon in this process on the real Runtime, a real in-process Broker, a config
file in a temporary directory (APPLIANCE_CONFIG points at it, as on a kiosk), and an HTTP
client that keeps cookies like a browser."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient
from appliance.bus.topics import SetupCode
from appliance.config import load_config
from appliance.runtime import Runtime
from appliance.setup import daemon
from appliance.setup.daemon import SetupServer

PASSWORD = "correct horse battery staple"

CONFIG = """\
# The kiosk's config, as a technician left it.
[paths]
state_dir = "{state}"
run_dir = "{run}"

[bus]
allowed_groups = []

[screening]
# Our site's policy.
threshold_c = 38.0  # degC
units = "C"

[setup]
host = "127.0.0.1"
port = {port}
tls = {tls}
{extra}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Screenshots: $APPLIANCE_ARTIFACTS/setup (kept by CI), else a temporary dir."""
    base = os.environ.get("APPLIANCE_ARTIFACTS")
    path = Path(base) / "setup" if base else tmp_path_factory.mktemp("setup-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short: a Unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="stp-", dir="/tmp") as d:
        yield Path(d)


@dataclass
class Rig:
    server: SetupServer
    bus: BusClient
    rt: Runtime
    config_file: Path
    run_dir: Path
    state_dir: Path
    broker: Broker  # closing it takes the bus away from the page

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.asynccontextmanager
async def running(
    run_dir: Path, *, tls: bool = False, extra: str = "", port: int | None = None, **start: Any
) -> AsyncIterator[Rig]:
    """The daemon on a fresh config; `extra` goes into [setup], `start` to daemon.start (the
    inherited sockets, the idle clock)."""
    state = run_dir / "state"
    config_file = run_dir / "appliance.toml"
    config_file.write_text(
        CONFIG.format(
            state=state, run=run_dir, port=port or free_port(), tls="true" if tls else "false", extra=extra
        )
    )
    old = os.environ.get("APPLIANCE_CONFIG")
    os.environ["APPLIANCE_CONFIG"] = str(config_file)
    broker = Broker()
    await broker.start(run_dir / "bus.sock")
    try:
        config = load_config()
        rt = Runtime("setup", config)
        async with rt.stack:
            server = await daemon.start(rt, **start)
            async with BusClient(config.bus_socket, "test") as bus:
                yield Rig(server, bus, rt, config_file, run_dir, state, broker)
            rt.stop()
            await rt._shutdown()
    finally:
        await broker.close()
        if old is None:
            os.environ.pop("APPLIANCE_CONFIG", None)
        else:
            os.environ["APPLIANCE_CONFIG"] = old


@pytest.fixture
async def rig(run_dir: Path) -> AsyncIterator[Rig]:
    async with running(run_dir) as r:
        yield r


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


class Web:
    """An HTTP client with a cookie jar (unsafe=True: the host is an IP address)."""

    def __init__(self, base: str, **kwargs: Any) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(errors="replace"), r

    async def post(
        self, path: str, data: dict[str, str], **kw: Any
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.base + path, data=data, allow_redirects=False, **kw) as r:
            return r.status, await r.text(errors="replace"), r

    async def csrf(self, path: str = "/login") -> str:
        status, html, _ = await self.get(path)
        assert status == 200, (path, status)
        return csrf_of(html)

    async def close(self) -> None:
        await self.session.close()


async def first_use(rig: Rig, web: Web, password: str = PASSWORD) -> None:
    """Set the password as a technician does: ask for the code, read it off the kiosk's
    screen (here: the setup.code topic the screen shows), enter it with a new password."""
    codes = rig.bus.subscribe("setup.code")
    token = await web.csrf("/first-use")
    status, _, r = await web.post("/first-use/code", {"csrf": token})
    assert status == 303 and r.headers["Location"] == "/first-use"
    code = None
    while code is None:
        msg = (await codes.get(timeout=5)).msg
        assert isinstance(msg, SetupCode)
        code = msg.code
    token = await web.csrf("/first-use")
    status, _, r = await web.post(
        "/first-use", {"csrf": token, "code": code, "password": password, "confirm": password}
    )
    assert status == 303 and r.headers["Location"] == "/status", status
    codes.close()


async def login(web: Web, password: str = PASSWORD) -> int:
    token = await web.csrf("/login")
    status, _, _ = await web.post("/login", {"csrf": token, "password": password})
    return status
