"""Durability end to end: the real broker and the real screening daemon as processes, killed
with SIGKILL mid-run and restarted; events.db stays intact and a consumer that was away
fills its gap with screening.events_since, with no gap and nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import numpy as np
import pytest

from appliance.bench.alert_latency import DaemonProcess, build_script, write_config
from appliance.bus.client import BusClient, Subscription
from appliance.bus.topics import EchoParams, EventsSince, ScreeningResult, ThermalFrame
from appliance.config import AppConfig, load_config
from appliance.screening.configure import settings_for
from appliance.screening.events import EventStore
from appliance.screening.records import FrameInput

from .synth import Clock, Head, empty, visit
from .test_daemon import faces

pytestmark = pytest.mark.slow

TOPICS = ("screening.result", "alert.fever")


class Consumer:
    """What a reconnecting consumer does: follow live, and on (re)connecting ask for what it
    missed. Per topic it applies a seq only above the last one it applied, so a message seen
    both live and in a page is applied once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.applied: dict[str, list[int]] = {t: [] for t in TOPICS}
        self.live: set[tuple[str, int]] = set()
        self.fetched: set[tuple[str, int]] = set()
        self.results: dict[int, ScreeningResult] = {}

    def apply(self, topic: str, seq: int, how: str) -> None:
        (self.live if how == "live" else self.fetched).add((topic, seq))
        done = self.applied[topic]
        if not done or seq > done[-1]:
            done.append(seq)

    async def catch_up(self, bus: BusClient) -> None:
        since = min((v[-1] if v else 0) for v in self.applied.values())
        while True:
            page = await bus.request("screening.events_since", EventsSince(seq=since, limit=2), timeout=10)
            for rec in page.events:
                self.results[rec.seq] = rec.result
                self.apply(rec.topic, rec.seq, "page")
            if not page.events or page.events[-1].seq >= page.last_seq:
                return
            since = page.events[-1].seq

    def take_live(self, subs: Iterable[Subscription]) -> None:
        for sub in subs:
            while sub.queue:
                rx = sub.queue.popleft()
                self.apply(rx.topic, rx.msg.seq, "live")
                if isinstance(rx.msg, ScreeningResult):
                    self.results[rx.msg.seq] = rx.msg


@contextlib.asynccontextmanager
async def appliance_processes() -> AsyncIterator[tuple[AppConfig, DaemonProcess, DaemonProcess]]:
    with tempfile.TemporaryDirectory(prefix="dur-", dir="/tmp") as d:
        workdir = Path(d)
        config_path = write_config(workdir)
        config = load_config(config_path, apply_env=False)
        broker = DaemonProcess("bus", config_path, workdir)
        screening = DaemonProcess("screening", config_path, workdir)
        await broker.start()
        try:
            await screening.start()
            yield config, broker, screening
        finally:
            await screening.stop()
            await broker.stop()


class Thermal:
    """Plays the thermal daemon: frames 0.1 s apart in envelope time, sent 5 ms apart (the
    daemon takes well under a millisecond per frame, so none is dropped as stale)."""

    def __init__(self, bus: BusClient) -> None:
        self.bus = bus
        self.clock = Clock()
        self.rng = np.random.default_rng(5)
        self.base = time.monotonic()
        self.n = 0

    async def play(self, frames: Iterable[FrameInput]) -> None:
        for f in frames:
            self.n += 1
            msg = ThermalFrame(
                pixels=np.asarray(f.pixels).ravel().tolist(),
                thermistor=f.thermistor_c,
                rate_hz=10.0,
                frame_seq=self.n,
            )
            self.bus.publish_nowait("thermal.frame", msg, ts=self.base + f.t)
            await asyncio.sleep(0.005)

    async def empty(self, seconds: float) -> None:
        await self.play(empty(self.clock, seconds, rng=self.rng))

    async def person(self, head: Head) -> None:
        await self.play(visit(self.clock, 2.5, [head], rng=self.rng))
        await self.empty(3.5)


async def wait_for(cond: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_kill_9_mid_run_loses_nothing_and_a_returning_consumer_fills_its_gap() -> None:
    async with appliance_processes() as (config, _broker, screening):
        normal, fever = faces(settings_for(config))
        sock = config.bus_socket
        steady, flaky = Consumer("steady"), Consumer("flaky")
        async with BusClient(sock, "thermal-sim") as pub, BusClient(sock, "steady") as a:
            steady_subs = [a.subscribe(t) for t in TOPICS]
            states = a.subscribe("screening.state")
            thermal = Thermal(pub)

            def steady_results() -> int:
                steady.take_live(steady_subs)
                return len(steady.applied["screening.result"])

            # Before the kill: three people, the flaky consumer leaves after the second.
            b = BusClient(sock, "flaky")
            await b.connect()
            flaky_subs = [b.subscribe(t) for t in TOPICS]
            await thermal.empty(1.5)
            for i, head in enumerate((fever, normal, fever)):
                await thermal.person(head)
                await wait_for(lambda i=i: steady_results() >= i + 1, f"result {i + 1}")
                if i == 1:
                    flaky.take_live(flaky_subs)
                    await b.close()
            assert flaky.applied["screening.result"] == [1, 2]

            async def kill_and_restart() -> None:
                screening.kill()
                assert screening.proc is not None
                assert await screening.proc.wait() == -9
                await screening.start()
                await thermal.empty(3.0)  # the new process learns the empty room again

            # Kill -9 while the fourth person is being measured: that visit gives no result.
            states.queue.clear()
            for f in visit(thermal.clock, 2.5, [fever], rng=thermal.rng):
                await thermal.play([f])
                if any(rx.msg.state == "measuring" for rx in states.queue):
                    break
            await kill_and_restart()

            # Kill -9 again the moment a result arrives: its durability checkpoint is then due
            # or running in the daemon's worker thread.
            for f in visit(thermal.clock, 2.5, [fever], rng=thermal.rng):
                await thermal.play([f])
                if steady_results() >= 4:
                    break
            await kill_and_restart()

            # Three more people; the flaky consumer returns after the first of them.
            for i, head in enumerate((fever, normal, fever)):
                await thermal.person(head)
                await wait_for(lambda i=i: steady_results() >= 5 + i, f"result {5 + i} after the restarts")
                if i == 0:
                    b = BusClient(sock, "flaky")
                    await b.connect()
                    # Subscribe first, then ask: whatever is published meanwhile is in one or both.
                    flaky_subs = [b.subscribe(t) for t in TOPICS]
                    await b.request("bus.echo", EchoParams())  # both subscriptions are in place
                    await flaky.catch_up(b)
                    assert flaky.fetched, "the returning consumer found nothing to fill in"
            flaky.take_live(flaky_subs)
            await flaky.catch_up(b)
            await steady.catch_up(a)
            steady.take_live(steady_subs)
            await b.close()
        assert await screening.stop() == 0

        db = config.paths.state_dir / "events.db"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
        assert not list(config.paths.state_dir.glob("events.db.damaged-*"))
        with EventStore.open_readonly(db) as store:
            rows = list(store.rows())
        stored = {t: [e.seq for e in rows if e.topic == t] for t in TOPICS}
        by_seq = {e.seq: e.result for e in rows if e.topic == "screening.result"}
        # Seven results, numbered on through the kill (same boot: no skip), none lost.
        assert stored["screening.result"] == list(range(1, 8))
        assert [by_seq[s].result for s in stored["screening.result"]] == [
            "elevated", "normal", "elevated", "elevated", "elevated", "normal", "elevated",
        ]  # fmt: skip
        assert stored["alert.fever"] == [
            s for s in stored["screening.result"] if by_seq[s].result == "elevated"
        ]
        for consumer in (steady, flaky):
            # Exactly what is stored: no gap, nothing twice, in order.
            assert consumer.applied == stored, consumer.name
            assert all(consumer.results[s] == by_seq[s] for s in stored["screening.result"]), consumer.name
        # The flaky consumer really was away: what it missed came from events_since, not live.
        missed = {("screening.result", 3), ("alert.fever", 3), ("screening.result", 4), ("alert.fever", 4)}
        assert missed <= flaky.fetched and not missed & flaky.live


def test_the_latency_bench_scene_gives_one_elevated_result_per_person() -> None:
    # The bench times the frame that decides each result; the scene it plays must give one
    # elevated result per person with the core as tuned now, whatever its coefficients.
    with tempfile.TemporaryDirectory(prefix="bsc-", dir="/tmp") as d:
        config = load_config(write_config(Path(d)), apply_env=False)
    script = build_script(settings_for(config), people=4)
    assert [r for _, r in script.decisions] == ["elevated"] * 4
    offsets = [t for t, _ in script.frames]
    assert offsets == sorted(offsets)
    assert {t for t, _ in script.decisions} <= set(offsets)
