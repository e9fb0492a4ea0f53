"""TURN REST credentials from the room service, checked by a real coturn (use-auth-secret)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aioice import stun, turn

from appliance.errors import ConfigError
from appliance.room import protocol as p
from appliance.room.config import load_room_config, turn_secret
from appliance.room.turn import turn_credentials

from .helpers import admin_makes_room, connect, room_config, running_room, viewer_session

TURNSERVER = shutil.which("turnserver")
pytestmark = pytest.mark.skipif(TURNSERVER is None, reason="coturn (turnserver) is not installed")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def run_coturn(tmp_path: Path, *extra: str) -> Iterator[tuple[int, str]]:
    """A coturn on 127.0.0.1 with use-auth-secret and any extra config lines; yields (port, secret)."""
    secret = secrets.token_hex(24)
    port = free_udp_port()
    conf = tmp_path / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                "min-port=49152",
                "max-port=65535",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                "realm=appliance.test",
                *extra,
                "no-tls",
                "no-dtls",
                "no-cli",
                "fingerprint",
                f"pidfile={tmp_path / 'turn.pid'}",
                f"userdb={tmp_path / 'turndb'}",
                f"log-file={tmp_path / 'turn.log'}",
                "simple-log",
            ]
        )
        + "\n"
    )
    conf.chmod(0o600)
    assert TURNSERVER is not None
    proc = subprocess.Popen(
        [TURNSERVER, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield port, secret
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[int, str]]:
    with run_coturn(tmp_path) as server:
        yield server


class Quiet(asyncio.DatagramProtocol):
    pass


async def allocate(port: int, username: str, password: str) -> tuple[str, int]:
    transport, _ = await turn.create_turn_endpoint(Quiet, ("127.0.0.1", port), username, password)
    try:
        relayed: tuple[str, int] = transport.get_extra_info("sockname")
        return relayed
    finally:
        transport.close()


async def allocate_when_up(port: int, username: str, password: str) -> tuple[str, int]:
    # coturn can take a while to listen on a loaded CI machine: retry for up to a minute.
    deadline = time.monotonic() + 60
    while True:
        try:
            async with asyncio.timeout(3):
                return await allocate(port, username, password)
        except (TimeoutError, ConnectionRefusedError, stun.TransactionTimeout):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_credentials_from_the_welcome_allocate_and_wrong_ones_do_not(
    coturn: tuple[int, str], tmp_path: Path
) -> None:
    port, secret = coturn
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    config = room_config(
        tmp_path,
        turn={"secret_file": str(secret_file), "ttl_s": 600},
        ice_servers=[{"urls": [f"turn:127.0.0.1:{port}?transport=udp"], "turn_credentials": True}],
    )
    async with running_room(config, turn_secret=turn_secret(config)) as room, aiohttp.ClientSession() as http:
        _, invite, _ = await admin_makes_room(room, http)
        session = await viewer_session(room, http, invite)
        client = await connect(http, room.ws_url(session=session))
        welcome = await client.recv()
        assert isinstance(welcome, p.Welcome)
    server = welcome.ice_servers[0]
    assert server.urls == [f"turn:127.0.0.1:{port}?transport=udp"]
    assert server.username is not None and server.credential is not None
    expiry, peer = server.username.split(":", 1)
    assert peer == welcome.peer_id and 590 <= int(expiry) - time.time() <= 601

    relayed = await allocate_when_up(port, server.username, server.credential)
    assert relayed[0] == "127.0.0.1" and relayed[1] > 0

    with pytest.raises(stun.TransactionFailed, match="401"):
        await allocate(port, server.username, server.credential[:-4] + "AAA=")
    forged, _ = turn_credentials(b"not the shared secret at all", "v1", time.time(), 600)
    with pytest.raises(stun.TransactionFailed, match="401"):
        await allocate(port, forged, _)
    stale_user, stale_password = turn_credentials(secret.encode(), "v1", time.time() - 1200, 600)
    with pytest.raises(stun.TransactionFailed, match="401"):
        await allocate(port, stale_user, stale_password)


def test_secret_files_and_inline_secrets_must_be_private(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text("0123456789abcdef0123\n")
    secret_file.chmod(0o644)
    config = room_config(tmp_path, turn={"secret_file": str(secret_file)})
    with pytest.raises(ConfigError, match=r"turn\.secret_file.*0600"):
        turn_secret(config)
    secret_file.chmod(0o600)
    assert turn_secret(config) == b"0123456789abcdef0123"

    cfg = tmp_path / "room.toml"
    cfg.write_text('[turn]\nsecret = "0123456789abcdef0123"\n')
    os.chmod(cfg, 0o644)
    with pytest.raises(ConfigError, match=r"turn\.secret:.*0600"):
        load_room_config(cfg)
    os.chmod(cfg, 0o600)
    assert load_room_config(cfg).turn.secret == "0123456789abcdef0123"


def test_turn_credentials_need_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="turn_credentials"):
        room_config(tmp_path, ice_servers=[{"urls": ["turn:example.org"], "turn_credentials": True}])


async def test_no_turn_configured_means_no_credentials(tmp_path: Path) -> None:
    config = room_config(tmp_path, ice_servers=[{"urls": ["stun:stun.example.org"]}])
    async with running_room(config) as room:
        servers = room.s.ice.for_peer("v1", time.time())
    assert servers == [p.IceServer(urls=["stun:stun.example.org"])]


async def test_a_viewers_turn_credentials_end_with_its_session(tmp_path: Path) -> None:
    """A viewer's call ends with its session (one hour by default; its socket is closed then),
    but TURN credentials live turn.ttl_s (a day by default): a viewer whose session ended, or
    whose invite was revoked, could have gone on using the relay for the rest of the day. Its
    credentials expire with its session; the kiosk's keep turn.ttl_s."""
    secret_file = tmp_path / "turn-secret"
    secret_file.write_text("a shared secret of some length\n")
    secret_file.chmod(0o600)
    config = room_config(
        tmp_path,
        rooms={"viewer_session_ttl_s": 120},
        turn={"secret_file": str(secret_file), "ttl_s": 86400},
        ice_servers=[{"urls": ["turn:127.0.0.1:3478?transport=udp"], "turn_credentials": True}],
    )
    async with running_room(config, turn_secret=turn_secret(config)) as room, aiohttp.ClientSession() as http:
        _, invite, device_token = await admin_makes_room(room, http, pair=True)
        assert device_token is not None
        session = await viewer_session(room, http, invite)
        viewer = await connect(http, room.ws_url(session=session))
        device = await connect(http, room.ws_url(), device_token)
        welcomes = [await viewer.recv(), await device.recv()]
    expiries = []
    for welcome in welcomes:
        assert isinstance(welcome, p.Welcome)
        username = welcome.ice_servers[0].username
        assert username is not None
        expiries.append(int(username.split(":", 1)[0]) - time.time())
    assert 110 <= expiries[0] <= 121, expiries  # the viewer's session: 120 s
    assert 86390 <= expiries[1] <= 86401, expiries  # the kiosk: turn.ttl_s
