"""`appliance bench system`: the whole appliance's resource budget and a soak (issue 8, 3 and 4).

It runs `appliance demo --headless` (the room service on loopback, the paired simulated kiosk,
every daemon as its own supervised process) and joins aiortc viewers through the room's viewer
flow, as the viewer page does: the demo's viewer link's invite for a session, the signaling
WebSocket, an answer to the kiosk's offer, a join on the events channel.

    startup       every daemon READY (ready_all_s: the largest of the demo report's ready_s,
                  the setup daemon's from its first visit, below) but the setup daemon:
                  socket-activated, it has not started, as on a kiosk nobody has set up lately
    one viewer    after a warm-up, rss_total_mb: the median over a few samples of the sum of
                  the kiosk daemons' RSS, the setup daemon not running (the room service is
                  hosted elsewhere on a real device: it is reported on its own, and in
                  rss_total_with_room_mb). RSS counts the
                  pages the daemons share (the interpreter, libraries) once per daemon; the
                  same sum as PSS (shared pages split) and USS (private pages only) is
                  reported beside it
    soak          a second viewer, then SOAK seconds (120 with --quick, 3600 otherwise, or
                  APPLIANCE_SOAK_S); the first quarter (at most 300 s) is warm-up. Every
                  INTERVAL each daemon's VmRSS, open fds (/proc/PID/fd) and threads are sampled.
                  RSS growth: the median of the last three samples against the median of the
                  first three after warm-up, per daemon and for the kiosk's total; fd growth:
                  the last sample against the first after warm-up, all fds and those that are
                  not files (sockets, pipes, event fds: what a leaked connection leaves). Files
                  may grow a little and stay bounded: the screen opens a font file per
                  (size, bold) the first time a text needs it.
                  cpu_share_per_daemon: utime + stime over the soak window / the window (1.0 is
                  one core busy).

                  asyncio tasks: every daemon's runtime republishes health.<daemon> every
                  HEALTH_HEARTBEAT_S with its task count; the bench listens on the demo's bus
                  and samples the latest count of each daemon's current pid beside its RSS.
    setup visit   after the soak (which it would otherwise change: the setup daemon's idle exit
                  comes in the middle of a long one), one HTTP GET to the setup page, which
                  starts its daemon: setup_activation_s from the connect to the HTTP response
                  (any: a login page, a redirect), setup_rss_mb the median of its RSS sampled
                  while it runs, rss_total_with_setup_mb the one-viewer total plus that: what
                  the kiosk uses while a technician is at the setup page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.bench.measure import cpu_seconds
from appliance.demo.supervisor import SOCKET_ACTIVATED

ROOM = "room"
STARTUP_TIMEOUT_S = 120.0
VIEWER_VIDEO_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 60.0
SETUP = "setup"
# The setup daemon starts on this visit: an interpreter, aiohttp, the pages.
SETUP_VISIT_TIMEOUT_S = 60.0
SETUP_SAMPLES = 3
SETUP_SAMPLE_INTERVAL_S = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- /proc ---------------------------------------------------------------------------------------


def daemon_pids(parent: int) -> dict[str, int]:
    """The demo's children, by daemon name: processes whose parent is the demo and whose command
    line is `... -m appliance run NAME`."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "run" in args and args.index("run") + 1 < len(args):
            found[args[args.index("run") + 1]] = int(entry)
    return found


def sample_process(pid: int) -> dict[str, float] | None:
    """VmRSS, PSS and USS (MB), open fds (and of them those that are not paths: sockets, pipes,
    event fds), threads and CPU seconds of one process; None when it is gone."""
    try:
        rss_kb = threads = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = nonfile = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            with contextlib.suppress(OSError):  # closed in between
                nonfile += not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/")
        cpu = cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None
    pss_kb = uss_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):  # smaps_rollup: Linux 4.14+
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss_kb = int(line.split()[1])
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss_kb += int(line.split()[1])
    return {
        "rss_mb": rss_kb / 1024,
        "pss_mb": pss_kb / 1024,
        "uss_mb": uss_kb / 1024,
        "fds": fds,
        "nonfile_fds": nonfile,
        "threads": threads,
        "cpu_s": cpu,
    }


@dataclass
class Sample:
    t: float
    pids: dict[str, int]
    procs: dict[str, dict[str, float]]

    def total_rss(self, *, with_room: bool = False, key: str = "rss_mb") -> float:
        return sum(v[key] for n, v in self.procs.items() if with_room or n != ROOM)


def take_sample(parent: int, t0: float, tasks: dict[int, int] | None = None) -> Sample:
    """tasks: asyncio task counts by pid (from health heartbeats); a daemon whose current pid
    has not been heard from yet has none in its sample."""
    pids = daemon_pids(parent)
    procs = {n: s for n, pid in pids.items() if (s := sample_process(pid)) is not None}
    for name, proc in procs.items():
        if tasks is not None and (count := tasks.get(pids[name])) is not None:
            proc["tasks"] = count
    return Sample(round(time.monotonic() - t0, 1), pids, procs)


class HealthWatch:
    """The latest asyncio task count each daemon's runtime published, by pid."""

    def __init__(self, bus_socket: Path) -> None:
        self.bus_socket = bus_socket
        self.tasks: dict[int, int] = {}
        self._bus: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from appliance.bus.client import BusClient

        self._bus = BusClient(self.bus_socket, "bench")
        await self._bus.connect(30)
        self._task = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        from appliance.bus.topics import Health

        assert self._bus is not None
        async for received in self._bus.subscribe("health.*"):
            if isinstance(received.msg, Health):
                self.tasks[received.msg.pid] = received.msg.tasks

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._bus is not None:
            await self._bus.close()


# --- the viewers ---------------------------------------------------------------------------------


@dataclass
class Viewer:
    """An aiortc viewer through the room's viewer flow; counts the kiosk's video frames."""

    base: str
    invite: str
    name: str
    frames: int = 0
    offers: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    _pcs: list[Any] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _http: Any = None
    _ws: Any = None
    _closing: bool = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connect(self) -> None:
        import aiohttp

        self._http = aiohttp.ClientSession()
        await self._open()
        self._spawn(self._keep())

    async def _open(self) -> None:
        async with self._http.post(f"{self.base}/api/v1/viewer/session", json={"invite": self.invite}) as r:
            r.raise_for_status()
            session = (await r.json())["session"]
        self._ws = await self._http.ws_connect(
            self.base.replace("http://", "ws://", 1) + f"/api/v1/ws?session={session}"
        )

    async def _keep(self) -> None:
        """Signaling; a new session when the room closes this one (a viewer session lasts an
        hour by default: a full soak outlives it)."""
        while True:
            try:
                await self._signaling()
            except Exception as exc:
                self.errors.append(f"signaling: {type(exc).__name__}: {exc}")
            if self._closing:
                return
            self.reconnects += 1
            await asyncio.sleep(1.0)
            try:
                await self._open()
            except Exception as exc:
                self.errors.append(f"reconnect: {type(exc).__name__}: {exc}")

    async def _signaling(self) -> None:
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from appliance.room import protocol as p

        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            msg = p.decode_to_client(message.data)
            if isinstance(msg, p.Error):
                self.errors.append(str(msg))
            elif isinstance(msg, p.Offer):
                self.offers += 1
                for old in self._pcs:
                    await old.close()
                self._pcs.clear()
                pc = RTCPeerConnection()
                self._pcs.append(pc)
                pc.on("track", lambda track: self._spawn(self._consume(track)))
                pc.on("datachannel", self._on_channel)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self._ws.send_str(p.encode(p.Answer(sdp=pc.localDescription.sdp)))

    def _on_channel(self, channel: Any) -> None:
        from appliance.publisher import channels

        def on_message(data: str) -> None:
            with contextlib.suppress(Exception):
                if isinstance(channels.decode_to_viewer(data), channels.Hello):
                    channel.send(channels.encode(channels.Join(name=self.name, last_seq=None)))

        if channel.label == channels.EVENTS:
            channel.on("message", on_message)

    async def _consume(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind == "video":
                    self.frames += 1

    async def wait_video(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.frames < 10:
            if time.monotonic() > deadline:
                raise RuntimeError(f"viewer {self.name}: no video within {timeout:.0f} s ({self.errors})")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            if self._ws is not None:
                await self._ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pc in self._pcs:
            with contextlib.suppress(Exception):
                await pc.close()
        if self._http is not None:
            await self._http.close()


# --- the demo ------------------------------------------------------------------------------------


class Demo:
    """`appliance demo --headless` as a child process; its printed links and its log lines."""

    def __init__(self, work: Path, cap_s: float) -> None:
        self.work = work
        self.cap_s = cap_s
        self.report_path = work / "demo-report.json"
        self.proc: asyncio.subprocess.Process | None = None
        self.names: list[str] = []
        self.viewer_link: str | None = None
        self.kiosk_line: str | None = None
        self.setup_url: str | None = None
        self.ready: set[str] = set()
        self.log_tail: list[str] = []
        self.incidents: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        env = dict(os.environ)
        env.setdefault("APPLIANCE_DEMO_SETUP_PORT", str(_free_port()))
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "demo",
            "--headless",
            "--for",
            str(int(self.cap_s)),
            "--report",
            str(self.report_path),
            "--workdir",
            str(self.work / "demo"),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._tasks = [
            asyncio.ensure_future(self._read(self.proc.stdout)),
            asyncio.ensure_future(self._read(self.proc.stderr)),
        ]

    @property
    def on_demand(self) -> set[str]:
        """Daemons the demo starts on a first connection (socket-activated): not READY at the start."""
        return set(self.names) & SOCKET_ACTIVATED

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line_b := await stream.readline():
            line = line_b.decode(errors="replace").rstrip()
            self.log_tail = [*self.log_tail[-40:], line]
            if m := re.match(r"appliance demo: running (.+) \(work dir", line):
                self.names = [n.strip() for n in m.group(1).split(",")]
            elif m := re.search(r"viewer link:\s+(http://\S+/view/\S+)", line):
                self.viewer_link = m.group(1)
            elif m := re.search(r"setup page:\s+(http://\S+)", line):
                self.setup_url = m.group(1)
            elif "kiosk:" in line:
                self.kiosk_line = line.strip()
            elif m := re.search(r"demo INFO: (\S+) ready in", line):
                self.ready.add(m.group(1))
            elif "exited with" in line or "missed its watchdog" in line or "did not stop" in line:
                self.incidents.append(line)

    async def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while not (self.names and self.kiosk_line and self.ready >= set(self.names) - self.on_demand):
            if self.proc.returncode is not None:
                raise RuntimeError(f"the demo ended early: {self.log_tail[-10:]}")
            if time.monotonic() > deadline:
                missing = sorted(set(self.names) - self.on_demand - self.ready)
                raise RuntimeError(f"the demo did not start within {timeout:.0f} s (not ready: {missing})")
            await asyncio.sleep(0.2)
        if self.viewer_link is None or "paired" not in self.kiosk_line or "not paired" in self.kiosk_line:
            raise RuntimeError(f"no paired kiosk and viewer link: {self.kiosk_line} {self.viewer_link}")

    async def stop(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            report: dict[str, Any] = json.loads(self.report_path.read_text())
        except (OSError, json.JSONDecodeError):
            report = {}
        return report


# --- the setup page ------------------------------------------------------------------------------


@dataclass
class SetupVisit:
    """One visit to the socket-activated setup page and its daemon's RSS after it."""

    activation_s: float | None = None
    rss_mb: list[float] = field(default_factory=list)
    error: str | None = None


async def http_get_status(url: str) -> str:
    """The status line of a plain HTTP/1.1 GET to url (any status: a login page, a redirect)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status = (await reader.readline()).decode(errors="replace").strip()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not status.startswith("HTTP/"):
        raise ConnectionError(f"no HTTP response from {url}: {status!r}")
    return status


async def visit_setup(url: str, parent: int) -> SetupVisit:
    """GET the setup page (its daemon starts on the connection), then sample its RSS."""
    visit = SetupVisit()
    start = time.monotonic()
    try:
        async with asyncio.timeout(SETUP_VISIT_TIMEOUT_S):
            await http_get_status(url)
    except (OSError, TimeoutError) as exc:
        visit.error = f"{type(exc).__name__}: {exc}"
        return visit
    visit.activation_s = round(time.monotonic() - start, 3)
    for _ in range(SETUP_SAMPLES):
        pid = daemon_pids(parent).get(SETUP)
        if pid is not None and (got := sample_process(pid)) is not None:
            visit.rss_mb.append(got["rss_mb"])
        await asyncio.sleep(SETUP_SAMPLE_INTERVAL_S)
    return visit


def setup_figures(visit: SetupVisit | None, rss_total_mb: float) -> dict[str, Any]:
    """The setup visit's figures; None for what it could not measure."""
    rss = round(_median_of(visit.rss_mb), 1) if visit is not None and visit.rss_mb else None
    return {
        "setup_activation_s": visit.activation_s if visit is not None else None,
        "setup_rss_mb": rss,
        "rss_total_with_setup_mb": round(rss_total_mb + rss, 1) if rss is not None else None,
        "setup_visit_error": visit.error if visit is not None else None,
    }


# --- figures -------------------------------------------------------------------------------------


def _median_of(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _growth_pct(base: float, last: float) -> float | None:
    return round((last - base) / base * 100, 2) if base > 0 else None


def soak_figures(samples: list[Sample], names: list[str]) -> dict[str, Any]:
    """RSS and fd growth over the soak samples (already past warm-up), per daemon and total."""
    head, tail = samples[:3], samples[-3:]
    rss_growth: dict[str, float | None] = {}
    fd_growth: dict[str, int | None] = {}
    nonfile_growth: dict[str, int | None] = {}  # sockets, pipes, event fds: what a leak leaves
    thread_growth: dict[str, int | None] = {}
    task_growth: dict[str, float | None] = {}
    for name in names:
        same_pid = {s.pids.get(name) for s in samples} == {samples[0].pids.get(name)}
        if not same_pid or any(name not in s.procs for s in samples):
            rss_growth[name] = fd_growth[name] = nonfile_growth[name] = thread_growth[name] = None
            task_growth[name] = None
            continue
        head_tasks = [s.procs[name]["tasks"] for s in head if "tasks" in s.procs[name]]
        tail_tasks = [s.procs[name]["tasks"] for s in tail if "tasks" in s.procs[name]]
        # Medians of three: one sample taken while a request is in flight is not a trend.
        task_growth[name] = (
            _median_of(tail_tasks) - _median_of(head_tasks) if head_tasks and tail_tasks else None
        )
        base = _median_of([s.procs[name]["rss_mb"] for s in head])
        last = _median_of([s.procs[name]["rss_mb"] for s in tail])
        rss_growth[name] = _growth_pct(base, last)
        fd_growth[name] = int(samples[-1].procs[name]["fds"] - samples[0].procs[name]["fds"])
        nonfile_growth[name] = int(
            samples[-1].procs[name]["nonfile_fds"] - samples[0].procs[name]["nonfile_fds"]
        )
        thread_growth[name] = int(samples[-1].procs[name]["threads"] - samples[0].procs[name]["threads"])
    total_base = _median_of([s.total_rss() for s in head])
    total_last = _median_of([s.total_rss() for s in tail])
    fds = [v for v in fd_growth.values() if v is not None]
    nonfile = [v for v in nonfile_growth.values() if v is not None]
    tasks = [v for v in task_growth.values() if v is not None]
    return {
        "soak_rss_growth_pct": _growth_pct(total_base, total_last),
        "soak_rss_growth_pct_per_daemon": rss_growth,
        "soak_rss_start_mb": round(total_base, 1),
        "soak_rss_end_mb": round(total_last, 1),
        "soak_fd_growth": sum(fds),
        "soak_fd_growth_per_daemon": fd_growth,
        "soak_nonfile_fd_growth_per_daemon": nonfile_growth,
        "soak_nonfile_fd_growth": sum(nonfile),
        "soak_thread_growth_per_daemon": thread_growth,
        # None when no daemon's count was heard (a demo of daemons without the heartbeat).
        "soak_task_growth": sum(tasks) if tasks else None,
        "soak_task_growth_per_daemon": task_growth,
    }


# --- the run -------------------------------------------------------------------------------------


async def _run(soak_s: float, *, one_viewer_warmup_s: float, interval_s: float) -> dict[str, Any]:
    warmup_s = max(10.0, min(300.0, soak_s / 4))
    cap_s = STARTUP_TIMEOUT_S + one_viewer_warmup_s + soak_s + 4 * VIEWER_VIDEO_TIMEOUT_S + 120
    viewers: list[Viewer] = []
    setup_visit: SetupVisit | None = None
    with tempfile.TemporaryDirectory(prefix="appliance-bench-system-") as tmp:
        demo = Demo(Path(tmp), cap_s)
        t0 = time.monotonic()
        await demo.start()
        assert demo.proc is not None
        watch = HealthWatch(demo.work / "demo" / "run" / "bus.sock")
        try:
            await demo.wait_started(STARTUP_TIMEOUT_S)
            started_s = round(time.monotonic() - t0, 1)
            await watch.start()
            assert demo.viewer_link is not None
            base, _, invite = demo.viewer_link.partition("/view/")

            # One viewer: the steady-state budget.
            viewers.append(Viewer(base, invite, "soak-1"))
            await viewers[0].connect()
            await viewers[0].wait_video(VIEWER_VIDEO_TIMEOUT_S)
            await asyncio.sleep(one_viewer_warmup_s)
            one: list[Sample] = []
            for _ in range(5):
                one.append(take_sample(demo.proc.pid, t0, watch.tasks))
                await asyncio.sleep(2.0)

            # Two viewers: the soak.
            viewers.append(Viewer(base, invite, "soak-2"))
            await viewers[1].connect()
            await viewers[1].wait_video(VIEWER_VIDEO_TIMEOUT_S)
            soak_start = time.monotonic()
            first = take_sample(demo.proc.pid, t0, watch.tasks)
            soak: list[Sample] = [first]
            frames_at_warmup: list[int] | None = None
            while (elapsed := time.monotonic() - soak_start) < soak_s:
                await asyncio.sleep(min(interval_s, max(0.0, soak_s - elapsed)))
                soak.append(take_sample(demo.proc.pid, t0, watch.tasks))
                if frames_at_warmup is None and soak[-1].t >= first.t + warmup_s:
                    frames_at_warmup = [v.frames for v in viewers]
            window_s = time.monotonic() - soak_start
            last = soak[-1]
            frames_after_warmup = [
                v.frames - f for v, f in zip(viewers, frames_at_warmup or [0, 0], strict=True)
            ]
            if demo.setup_url is not None:
                setup_visit = await visit_setup(demo.setup_url, demo.proc.pid)
        finally:
            for viewer in viewers:
                await viewer.close()
            await watch.close()
            report = await demo.stop()

    names = [n for n in demo.names if n in first.procs]
    # The kiosk's daemons, the setup daemon among them though it ran only for its visit.
    kiosk = [n for n in names if n != ROOM] + [
        n for n in demo.names if n in demo.on_demand and n not in names
    ]
    measured = [s for s in soak if s.t >= first.t + warmup_s]
    cpu_share: dict[str, float | None] = {}
    for name in names:
        if name in last.procs and last.pids.get(name) == first.pids.get(name):
            cpu_share[name] = round((last.procs[name]["cpu_s"] - first.procs[name]["cpu_s"]) / window_s, 4)
        else:
            cpu_share[name] = None
    daemons = report.get("daemons", {})
    ready = {n: d.get("ready_s") for n, d in daemons.items()}
    ready_values = [v for v in ready.values() if v is not None]
    # Every daemon that ran, the setup daemon (from its visit) included, was READY.
    all_ready = set(names) | (demo.on_demand & set(demo.names))
    rss_one = {n: round(_median_of([s.procs[n]["rss_mb"] for s in one if n in s.procs]), 1) for n in names}
    rss_total = round(_median_of([s.total_rss() for s in one]), 1)
    setup = setup_figures(setup_visit, rss_total)
    if setup["setup_rss_mb"] is not None:
        rss_one[SETUP] = setup["setup_rss_mb"]
    result: dict[str, Any] = {
        "rss_total_mb": rss_total,
        **setup,
        "rss_total_with_room_mb": round(_median_of([s.total_rss(with_room=True) for s in one]), 1),
        "pss_total_mb": round(_median_of([s.total_rss(key="pss_mb") for s in one]), 1),
        "uss_total_mb": round(_median_of([s.total_rss(key="uss_mb") for s in one]), 1),
        "rss_per_daemon_mb": rss_one,
        "fds_per_daemon": {n: int(one[-1].procs[n]["fds"]) for n in names if n in one[-1].procs},
        "threads_per_daemon": {n: int(one[-1].procs[n]["threads"]) for n in names if n in one[-1].procs},
        "tasks_per_daemon": {
            n: int(one[-1].procs[n]["tasks"]) for n in names if "tasks" in one[-1].procs.get(n, {})
        },
        "cpu_share_per_daemon": cpu_share,
        "cpu_share_kiosk_total": round(
            sum(v for n, v in cpu_share.items() if v is not None and n != ROOM), 4
        ),
        "ready_all_s": (
            max(ready_values) if ready_values and all(ready.get(n) is not None for n in all_ready) else None
        ),
        "ready_s_per_daemon": ready,
        "restarts": {n: d.get("restarts") for n, d in daemons.items()},
        "watchdog_kills": {n: d.get("watchdog_kills") for n, d in daemons.items()},
        "demo_started_s": started_s,
        "viewers": len(viewers),
        "viewer_frames_after_warmup": frames_after_warmup,
        "viewer_offers": [v.offers for v in viewers],
        "viewer_reconnects": [v.reconnects for v in viewers],
        "viewer_errors": [v.errors[-5:] for v in viewers],
        "soak_s": round(window_s, 1),
        "soak_warmup_s": warmup_s,
        "soak_interval_s": interval_s,
        "soak_samples": len(measured),
        **soak_figures(measured if len(measured) >= 2 else soak, names),
        "rss_total_series_mb": [[s.t, round(s.total_rss(), 1)] for s in soak],
        "incidents": demo.incidents,
        "kiosk_daemons": kiosk,
        "socket_activated_daemons": sorted(demo.on_demand),
        "targets": {
            "rss_total_mb": "<= 300",
            "ready_all_s": "<= 5",
            "soak_rss_growth_pct": "<= 5",
            "soak_nonfile_fd_growth": "<= 0",
            "soak_task_growth": "<= 0",
        },
    }
    return result


def bench_system(quick: bool = False) -> dict[str, Any]:
    env = os.environ.get("APPLIANCE_SOAK_S")
    soak_s = float(env) if env else (120.0 if quick else 3600.0)
    interval_s = 5.0 if soak_s <= 600 else 30.0
    one_viewer_warmup_s = 15.0 if soak_s <= 600 else 60.0
    return asyncio.run(_run(soak_s, one_viewer_warmup_s=one_viewer_warmup_s, interval_s=interval_s))
