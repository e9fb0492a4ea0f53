"""Tiny daemons for the integration tests, run as real processes: `python toy_daemon.py ROLE`.

ping     publishes test.event.ping n=1,2,3... and serves test.double
pong     for each ping, asks ping to double n and publishes the answer on test.state.pong
blocker  blocks its event loop a moment after it is ready (so its watchdog pings stop)
"""

from __future__ import annotations

import asyncio
import sys
import time

from appliance.bus.topics import Scratch
from appliance.config import load_config
from appliance.runtime import Main, Runtime, run_daemon


async def ping(rt: Runtime) -> None:
    bus = await rt.connect_bus()

    async def double(p: Scratch) -> Scratch:
        return Scratch(n=p.n * 2)

    async def tick() -> None:
        n = 0
        while True:
            n += 1
            await bus.publish("test.event.ping", Scratch(n=n))
            await asyncio.sleep(0.05)

    bus.serve("test.double", double)
    rt.spawn(tick(), "tick")
    rt.ready("pinging")


async def pong(rt: Runtime) -> None:
    bus = await rt.connect_bus()
    pings = bus.subscribe("test.event.ping")

    async def answer() -> None:
        async for rx in pings:
            assert isinstance(rx.msg, Scratch)
            doubled = await bus.request("test.double", Scratch(n=rx.msg.n))
            await bus.publish("test.state.pong", Scratch(n=doubled.n))

    rt.spawn(answer(), "answer")
    rt.ready("ponging")


async def blocker(rt: Runtime) -> None:
    async def block() -> None:
        await asyncio.sleep(0.3)
        rt.status("blocking")
        time.sleep(60)  # noqa: ASYNC251 - the bug under test: the loop blocks, the watchdog stops

    rt.spawn(block(), "block")
    rt.ready()


ROLES: dict[str, Main] = {"ping": ping, "pong": pong, "blocker": blocker}

if __name__ == "__main__":
    role = sys.argv[1]
    sys.exit(run_daemon(role, ROLES[role], load_config()))
