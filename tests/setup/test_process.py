"""`appliance run setup` as its own process next to `appliance run bus`: it tells systemd it is
ready, serves the page, clears a stale setup code on the screen, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
from bus.helpers import BrokerProcess, NotifySocket, daemon_env  # tests/bus, a sibling package

from appliance.bus.client import BusClient
from appliance.bus.topics import SetupCode

from .conftest import free_port


async def test_setup_daemon_process(run_dir: Path) -> None:
    port = free_port()
    (run_dir / "appliance.toml").write_text(
        f'[bus]\nallowed_groups = []\n\n[setup]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    broker = BrokerProcess(run_dir)
    await broker.start()
    notify = NotifySocket(run_dir / "notify-setup.sock")
    async with BusClient(run_dir / "bus.sock", "stale-screen") as bus:
        # A code left on the bus by a previous run (setup.code is retained).
        bus.publish_nowait("setup.code", SetupCode(code="999999", expires_at=time.time() + 600))
        await asyncio.sleep(0.1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "run", "setup", env=daemon_env(run_dir, notify)
        )
        try:
            ready = await notify.expect("READY=1", timeout=30)
            assert f"STATUS=listening on http://127.0.0.1:{port}" in ready
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/status", allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/login"
                async with http.get(f"http://127.0.0.1:{port}/login", allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/first-use"
            sub = bus.subscribe("setup.code")
            async with asyncio.timeout(5):
                while True:
                    msg = (await sub.get()).msg
                    assert isinstance(msg, SetupCode)
                    if msg.code is None:
                        break
        finally:
            proc.terminate()
            async with asyncio.timeout(15):
                code = await proc.wait()
            notify.close()
            await broker.stop()
            broker.notify.close()
    assert code == 0
