"""`appliance bench room`: one room service process holding many signaling WebSockets.

The real service (`appliance run room`, its own process) gets 50 rooms, each with a paired
device and a viewer link, provisioned straight into its database beforehand. Load generator
processes (separate from the service, as remote kiosks and browsers are) then connect 50
devices and 200 viewers (4 per room) over real WebSockets. Once every socket is up, each
viewer sends ICE messages at about 2 per second; the service relays each to the room's device,
which sends it straight back, and the service relays that to the viewer. The round trip
viewer -> service -> device -> service -> viewer (two relays) is the figure, timed by the viewer.

`viewers` and `devices` count the sockets that were open at the start of the measurement and
still open at its end.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

from appliance.bench.measure import cpu_seconds, quantile
from appliance.demo.notify import parse_notify
from appliance.room import protocol as p
from appliance.room.db import open_database
from appliance.room.devices import Devices
from appliance.room.rooms import Rooms

DEVICES = 50
VIEWERS_PER_ROOM = 4
LOAD_PROCESSES = 2
PROBE_EVERY_S = 0.5  # per viewer, jittered
TARGET_RTT_P99_MS = 50.0

CONFIG = """\
[service]
port = 0
database = "{db}"

[rooms]
viewer_session_per_address_per_min = 1000000
viewer_session_overall_per_min = 1000000
ws_connect_per_address_per_min = 1000000
ws_connect_overall_per_min = 1000000
"""
_READY = re.compile(r"listening on (http://\S+)")


def provision(db: Path, rooms: int) -> list[tuple[str, str]]:
    """Rooms, each with a device and an invite: [(device token, invite token)]."""
    conn = open_database(db)
    try:
        store, devices = Rooms(conn), Devices(conn)
        out = []
        now = time.time()
        for n in range(rooms):
            room = store.create(f"Bench room {n}", now)
            _, token = devices.add(room.id, f"bench-kiosk-{n}", "bench", "0", now)
            _, invite = store.create_invite(room.id, "bench", now, None)
            out.append((token, invite))
        return out
    finally:
        conn.close()


# --- the load generator (its own process) ------------------------------------------------------


async def _device(session: aiohttp.ClientSession, url: str, token: str, up: list[int]) -> None:
    ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
    async for frame in ws:
        if frame.type != aiohttp.WSMsgType.TEXT:
            break
        msg = p.decode_to_client(frame.data)
        if isinstance(msg, p.Welcome):
            up[0] += 1
        elif isinstance(msg, p.ViewerJoined):
            await ws.send_str(p.encode(p.Offer(to=msg.viewer_id, sdp="v=0 bench offer")))
        elif isinstance(msg, p.Ice) and msg.from_ is not None:
            # Straight back to the viewer that sent it: the viewer times the round trip.
            await ws.send_str(p.encode(p.Ice(to=msg.from_, candidate=msg.candidate)))
    up[0] -= 1


class _Viewer:
    def __init__(self) -> None:
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sent: dict[int, float] = {}
        self.rtts: list[float] = []
        self.offered = asyncio.Event()


async def _viewer_reader(viewer: _Viewer) -> None:
    assert viewer.ws is not None
    async for frame in viewer.ws:
        if frame.type != aiohttp.WSMsgType.TEXT:
            break
        msg = p.decode_to_client(frame.data)
        if isinstance(msg, p.Ice) and msg.candidate is not None:
            seq = int(msg.candidate.candidate.rsplit(" ", 1)[1])
            t0 = viewer.sent.pop(seq, None)
            if t0 is not None:
                viewer.rtts.append((time.perf_counter() - t0) * 1000)
        elif isinstance(msg, p.Offer):
            await viewer.ws.send_str(p.encode(p.Answer(sdp="v=0 bench answer")))
            viewer.offered.set()


async def _probe(viewer: _Viewer, until: float) -> None:
    assert viewer.ws is not None
    seq = 0
    await asyncio.sleep(random.uniform(0, PROBE_EVERY_S))  # spread the viewers out
    while time.monotonic() < until:
        seq += 1
        cand = p.IceCandidate(candidate=f"candidate:bench 1 udp 1 127.0.0.1 9 typ host {seq}")
        viewer.sent[seq] = time.perf_counter()
        await viewer.ws.send_str(p.encode(p.Ice(candidate=cand)))
        await asyncio.sleep(PROBE_EVERY_S * random.uniform(0.5, 1.5))


async def _load(
    base: str, pairs: list[tuple[str, str]], seconds: float, ready: Any, go: Event
) -> dict[str, Any]:
    ws_url = base.replace("http://", "ws://") + "/api/v1/ws"
    connector = aiohttp.TCPConnector(limit=0)  # WebSockets hold their connections: no pool cap
    async with aiohttp.ClientSession(connector=connector) as session:
        up = [0]
        tasks = [asyncio.create_task(_device(session, ws_url, token, up)) for token, _ in pairs]
        viewers: list[_Viewer] = []
        for _, invite in pairs:
            for _ in range(VIEWERS_PER_ROOM):
                async with session.post(base + "/api/v1/viewer/session", json={"invite": invite}) as resp:
                    token = (await resp.json())["session"]
                viewer = _Viewer()
                viewer.ws = await session.ws_connect(f"{ws_url}?session={token}")
                viewers.append(viewer)
                tasks.append(asyncio.create_task(_viewer_reader(viewer)))
        async with asyncio.timeout(60):
            await asyncio.gather(*(v.offered.wait() for v in viewers))
        ready.put(None)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        devices_at_start = up[0]
        viewers_at_start = sum(1 for v in viewers if v.ws is not None and not v.ws.closed)
        until = time.monotonic() + seconds
        await asyncio.gather(*(_probe(v, until) for v in viewers))
        await asyncio.sleep(0.5)  # the last echoes
        viewers_at_end = sum(1 for v in viewers if v.ws is not None and not v.ws.closed)
        devices_at_end = up[0]
        for v in viewers:
            assert v.ws is not None
            await v.ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "viewers": min(viewers_at_start, viewers_at_end),
        "devices": min(devices_at_start, devices_at_end),
        "rtts": [r for v in viewers for r in v.rtts],
        "lost": sum(len(v.sent) for v in viewers),
    }


def _load_process(
    base: str, pairs: list[tuple[str, str]], seconds: float, ready: Any, go: Event, out: Any
) -> None:
    try:
        out.put(asyncio.run(_load(base, pairs, seconds, ready, go)))
    except BaseException as exc:  # the parent must hear of it rather than wait forever
        ready.put(None)
        out.put({"error": f"{type(exc).__name__}: {exc}"})


# --- the service (its own process) -------------------------------------------------------------


def _start_service(config: Path, notify_path: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `appliance run room`; its URL comes in its READY notification, as systemd gets it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(30)
    env = {
        k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "INVOCATION_ID", "JOURNAL_STREAM")
    }
    env.update(NOTIFY_SOCKET=str(notify_path), APPLIANCE_LOG_LEVEL="WARNING")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "room", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        while True:
            fields = parse_notify(sock.recv(4096))
            if fields.get("READY") == "1" and (m := _READY.search(fields.get("STATUS", ""))):
                return proc, m.group(1)
    except TimeoutError:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the room service did not start:\n{log.read_text()}") from None
    finally:
        sock.close()


def bench_room(quick: bool = False) -> dict[str, Any]:
    seconds = 3.0 if quick else 15.0
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-room-") as tmp:
        config = Path(tmp) / "room.toml"
        config.write_text(CONFIG.format(db=Path(tmp) / "room.db"))
        pairs = provision(Path(tmp) / "room.db", DEVICES)
        log = Path(tmp) / "room.log"
        proc, url = _start_service(config, Path(tmp) / "notify.sock", log)
        try:
            ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            shares = [pairs[i::LOAD_PROCESSES] for i in range(LOAD_PROCESSES)]
            workers = [
                ctx.Process(target=_load_process, args=(url, share, seconds, ready, go, out))
                for share in shares
            ]
            for w in workers:
                w.start()
            for _ in workers:
                ready.get(timeout=120)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            go.set()
            results = [out.get(timeout=seconds + 120) for _ in workers]
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            for w in workers:
                w.join(30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            service_log = log.read_text(errors="replace")[-4000:]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("load generator failed: " + "; ".join(errors) + "\n" + service_log)
    rtts = [x for r in results for x in r["rtts"]]
    return {
        "viewers": sum(r["viewers"] for r in results),
        "devices": sum(r["devices"] for r in results),
        "relay_rtt_p50_ms": round(statistics.median(rtts), 3),
        "relay_rtt_p99_ms": round(quantile(rtts, 0.99), 3),
        "relay_rtt_max_ms": round(max(rtts), 3),
        "round_trips": len(rtts),
        "round_trips_lost": sum(r["lost"] for r in results),
        "seconds": seconds,
        "service_cpu_percent": round(cpu * 100, 1),
        "load_processes": LOAD_PROCESSES,
        "targets": {"viewers": ">= 200", "devices": ">= 50", "relay_rtt_p99_ms": f"<= {TARGET_RTT_P99_MS}"},
    }
