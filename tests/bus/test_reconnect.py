"""The broker is killed with SIGKILL and started again: clients recover by themselves.

The broker runs as a real `appliance run bus` process, so the crash leaves what a real crash
leaves (a stale socket file, connections reset mid-stream).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.bus.client import BusClient
from appliance.bus.topics import EchoParams, Scratch

from .helpers import BrokerProcess, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def run_dir(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Path]:
    yield tmp_path_factory.mktemp("run")


async def exercise_recovery(broker: BrokerProcess, path: Path) -> None:
    async def double(p: Scratch) -> Scratch:
        return Scratch(n=p.n * 2)

    server = BusClient(path, "server", backoff_max=0.2)
    listener = BusClient(path, "listener", backoff_max=0.2)
    try:
        await server.connect()
        await listener.connect()
        server.serve("test.double", double)
        await server.publish("test.state.a", Scratch(n=1))
        states = listener.subscribe("test.state.*")
        live = listener.subscribe("test.x")
        assert (await states.get(10)).msg.n == 1
        assert await listener.request("test.double", Scratch(n=2)) == Scratch(n=4)

        await broker.kill()
        await wait_until(lambda: not server.connected and not listener.connected, "both to notice")
        # While the bus is down, state is kept for re-publishing.
        server.publish_nowait("test.state.a", Scratch(n=2))

        await broker.start()
        await server.wait_connected(20)
        await listener.wait_connected(20)
        # Re-subscribed, and the state re-published into the new broker.
        while (rx := await states.get(10)).msg.n != 2:
            assert rx.msg.n == 1  # the value re-published at reconnection, before the newer one
        # Re-registered as server (its echo is answered after its serve frame is handled).
        await server.request("bus.echo", EchoParams(), timeout=10)
        assert await listener.request("test.double", Scratch(n=5), timeout=10) == Scratch(n=10)
        await server.publish("test.x", Scratch(n=7))
        assert (await live.get(10)).msg.n == 7
        assert server.reconnects == 1 and listener.reconnects == 1

        # A newcomer gets the retained value from the new broker.
        async with BusClient(path, "newcomer") as newcomer:
            assert (await newcomer.subscribe("test.state.a").get(10)).msg == Scratch(n=2)
            await newcomer.request("bus.echo", EchoParams())
    finally:
        await server.close()
        await listener.close()


async def test_clients_recover_after_kill_9(run_dir: Path) -> None:
    broker = BrokerProcess(run_dir)
    await broker.start()
    try:
        await exercise_recovery(broker, run_dir / "bus.sock")
    finally:
        assert await broker.stop() == 0
    await broker.notify.expect("STOPPING=1", timeout=5)
    assert not (run_dir / "bus.sock").exists()  # removed on a clean stop
    broker.notify.close()


async def test_clients_recover_after_kill_9_when_socket_activated(run_dir: Path) -> None:
    path = run_dir / "bus.sock"
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listen.bind(str(path))
    listen.listen(16)
    broker = BrokerProcess(run_dir, listen_sock=listen)
    await broker.start()
    try:
        await exercise_recovery(broker, path)
    finally:
        assert await broker.stop() == 0
    assert path.exists()  # systemd's socket, not the broker's to remove
    listen.close()
    broker.notify.close()
