"""On a device: the installed bus answers on its real socket."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from appliance.bus.client import BusClient
from appliance.bus.topics import EchoParams

SOCKET = Path("/run/appliance/bus.sock")


def test_installed_bus_answers(raspberry_pi: str) -> None:
    if not SOCKET.exists():
        pytest.skip(f"{SOCKET} does not exist: the appliance is not installed or not running")

    async def round_trip() -> float:
        async with BusClient(SOCKET, "hw-test") as bus:
            t0 = time.perf_counter()
            reply = await bus.request("bus.echo", EchoParams(data=b"ping"), timeout=2)
            assert reply.data == b"ping"
            return time.perf_counter() - t0

    assert asyncio.run(round_trip()) < 1.0
