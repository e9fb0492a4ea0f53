"""Integration: the broker and two real daemon processes, each with its own NOTIFY_SOCKET and
watchdog, as systemd would run them."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from appliance.bus.client import BusClient
from appliance.bus.topics import Health

from .helpers import BrokerProcess, NotifySocket, daemon_env

pytestmark = pytest.mark.slow

TOY = Path(__file__).with_name("toy_daemon.py")
WATCHDOG_USEC = "200000"  # pings every 0.1 s


async def start_daemon(role: str, run_dir: Path) -> tuple[asyncio.subprocess.Process, NotifySocket]:
    notify = NotifySocket(run_dir / f"{role}.notify")
    env = daemon_env(run_dir, notify, WATCHDOG_USEC=WATCHDOG_USEC)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(TOY), role, env=env)
    return proc, notify


async def test_two_daemons_talk_through_the_broker(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = tmp_path_factory.mktemp("itest")
    broker = BrokerProcess(run_dir)
    await broker.start()
    (ping, ping_notify), (pong, pong_notify) = [await start_daemon(r, run_dir) for r in ("ping", "pong")]
    try:
        async with BusClient(run_dir / "bus.sock", "observer") as observer:
            health = observer.subscribe("health.*")
            answers = observer.subscribe("test.state.pong")

            assert "STATUS=pinging" in (await ping_notify.expect("READY=1")).split("\n")
            assert "STATUS=ponging" in (await pong_notify.expect("READY=1")).split("\n")

            # ping -> broker -> pong -> request to ping -> reply -> pong -> broker -> observer
            got = [(await answers.get(15)).msg.n for _ in range(5)]
            assert all(n % 2 == 0 and n > 0 for n in got)
            assert got == sorted(got)

            for notify in (ping_notify, pong_notify):
                for _ in range(3):
                    await notify.expect("WATCHDOG=1", timeout=5)

            states: dict[str, str] = {}
            while states.get("pong") != "ready" or states.get("ping") != "ready":
                rx = await health.get(10)
                assert isinstance(rx.msg, Health)
                states[rx.msg.daemon] = rx.msg.state

            pong.send_signal(signal.SIGTERM)
            await pong_notify.expect("STOPPING=1")
            assert await pong.wait() == 0
            while True:
                rx = await health.get(10)
                if rx.topic == "health.pong" and rx.msg.state == "stopping":
                    break

        ping.send_signal(signal.SIGTERM)
        await ping_notify.expect("STOPPING=1")
        assert await ping.wait() == 0
    finally:
        for proc in (ping, pong):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert await broker.stop() == 0
        for n in (ping_notify, pong_notify, broker.notify):
            n.close()


async def test_blocked_event_loop_stops_the_watchdog(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir = tmp_path_factory.mktemp("blocked")
    proc, notify = await start_daemon("blocker", run_dir)
    try:
        await notify.expect("READY=1")
        await notify.expect("WATCHDOG=1", timeout=5)
        await notify.expect("STATUS=blocking")
        # Seven watchdog intervals and not one ping: systemd would kill it now.
        with pytest.raises(TimeoutError):
            while True:
                msg = await notify.recv(timeout=0.7)
                assert "WATCHDOG=1" not in msg.split("\n"), "a blocked loop still pinged the watchdog"
    finally:
        proc.kill()
        await proc.wait()
        notify.close()
