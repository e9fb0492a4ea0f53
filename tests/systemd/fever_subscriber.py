"""A bus consumer of fever alerts, as staff's viewer is one: run inside the booted machine.

    /opt/appliance/venv/bin/python fever_subscriber.py OUT.jsonl [SOCKET]

Subscribes to alert.fever with the appliance's own BusClient (which reconnects by itself when
the broker restarts) and writes one JSON line per alert it holds: {"seq", "ts", "via"}, via
"live" for a message received on the subscription, "fill" for one fetched with
screening.events_since to close a gap. A gap is a seq that jumps, and also silence: every
second it asks events_since(last seq) anyway, since alerts lost at the end of an outage leave
no later seq to reveal them. That is the resume-by-seq contract every consumer relies on;
the test checks that it leaves nothing out of events.db.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TextIO

from appliance.bus.client import BusClient
from appliance.bus.topics import EventsPage, EventsSince, FeverAlert
from appliance.errors import BusError

POLL_S = 1.0


class Consumer:
    def __init__(self, bus: BusClient, out: TextIO) -> None:
        self.bus = bus
        self.out = out
        self.seen: set[int] = set()
        self.last = 0

    def record(self, seq: int, ts: float, via: str) -> None:
        if seq in self.seen:
            return  # fetched by a fill and then delivered live (or the reverse): one alert
        self.seen.add(seq)
        self.last = max(self.last, seq)
        self.out.write(json.dumps({"seq": seq, "ts": ts, "via": via}) + "\n")
        self.out.flush()

    async def fill(self) -> None:
        while True:
            page: EventsPage = await self.bus.request(
                "screening.events_since", EventsSince(seq=self.last), timeout=3.0
            )
            for ev in page.events:
                if ev.topic == "alert.fever":
                    self.record(ev.seq, ev.result.end, "fill")
            # Results move `last` too: the next page starts after them.
            self.last = max(self.last, page.last_seq)
            if not page.events:
                return

    async def live(self) -> None:
        sub = self.bus.subscribe("alert.fever", maxsize=4096)
        async for rx in sub:
            msg = rx.msg
            assert isinstance(msg, FeverAlert)
            if msg.seq > self.last + 1 and self.last:
                await self._fill_quietly()
            self.record(msg.seq, rx.ts, "live")

    async def _fill_quietly(self) -> None:
        with contextlib.suppress(BusError, TimeoutError):
            await self.fill()

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self._fill_quietly()


async def main(out_path: str, socket: str) -> None:
    bus = BusClient(Path(socket), "fever-subscriber", backoff_max=0.2)
    await bus.connect(timeout=30)
    with open(out_path, "a") as out:  # noqa: ASYNC230 - once, before the loop starts
        consumer = Consumer(bus, out)
        await consumer._fill_quietly()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer.live())
            tg.create_task(consumer.poll())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "/run/appliance/bus.sock"))
