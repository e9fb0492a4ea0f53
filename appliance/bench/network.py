"""`appliance bench network`: network faults between the kiosk and the room service (issue 8, 2).

The kiosk and the room service each get a network namespace of their own, joined by the
impairment link (appliance.bench.netns, appliance.bench.netlink: a userspace relay between two
TUN devices, because this kernel has no sch_netem for veth + tc netem):

    ns K  10.213.0.1   `appliance demo --headless --room-url http://10.213.0.2:8443`: every
                       kiosk daemon, simulated hardware, a scenario with a febrile visitor
                       every SCENARIO_PERIOD_S (written by the bench)
    ns R  10.213.0.2   `appliance run room` on 10.213.0.2:8443, and a viewer
                       (appliance.bench.netviewer: aiortc, behaving as the viewer page does)

The bench provisions the room's database (admin, room, viewer link) and approves the kiosk's
pairing code in it as the demo's own code appears, as an admin would at /activate. Signaling
and media both cross the link: the kiosk's WebSocket to the room service and the WebRTC call
to the viewer. The viewer's own WebSocket stays inside ns R.

Phases, each on the same running system (the durations are Plan's), once the viewer has its
first alert (the thermal sensor's warm-up and the screening's empty-scene background take about
half a minute; a phase that starts after them sees an alert every 10 s):

    baseline     a clean link, 10 s
    impaired     200 ms one way on each direction (as netem "delay 200ms" on both ends: a
                 400 ms round trip) and 5 % of packets lost, independently, on each direction,
                 for 30 s; then a clean link for 8 s
    partition    every packet dropped silently, both ways, for 30 s; then the link heals (clean)
                 and the bench waits, up to 45 s, for the publisher to be back, the video to
                 resume and every alert raised so far to reach the viewer; then 5 s more, in
                 which anything that came twice would show

Observables: the viewer's JSON lines (frames, every event message, offers, presence); the
kiosk's bus (its Unix socket is reachable from here: namespaces split networks, not files),
where the publisher's call.state says room_connected once the room service has welcomed it;
and after the run the screening daemon's events.db, which says which alerts were raised and
when. The figures are computed in appliance.bench.netfigures (targets in "targets"):

    impaired_video_fps            frames the viewer decoded per second while impaired
    impaired_video_stall_s        the longest time without a frame while impaired
    impaired_alerts_raised / _missing    alerts raised while impaired; those the viewer never got
    impaired_alert_delay_max_s    the slowest of them, from being raised to reaching the viewer
    partition_link_lost_s         from the cut until the publisher knew its link was gone
    partition_reconnect_s         from the heal until the publisher was welcomed by the room
                                  service again (call.state room_connected)
    partition_viewer_offer_s      from the heal until the viewer got the kiosk's new offer
    partition_video_first_frame_s from the heal until the viewer's first frame (the old call may
                                  show a few before the new call replaces it)
    partition_video_resumed_s     from the heal until the video is back for good: the first frame
                                  of 3 s or more of frames without a 1 s stall
    partition_alerts_raised / _missing / _duplicated / _out_of_order
                                  alerts raised during the partition: those that never reached
                                  the viewer, those that reached it more than once, and those
                                  that came after a higher seq of the same set
    partition_alerts_replayed     of them, those that came from the kiosk's replay after the
                                  viewer's join on the new call (the others came live, on the
                                  old call's data channel, whose SCTP retransmits what the
                                  partition held up: the old call survives when its ICE consent
                                  checks, about 30 s, have not failed yet)
    events_duplicated             any event (seq, topic) the viewer got twice, all run long
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.bench.netfigures import ALERT, Marks, figures, steady_resume
from appliance.bench.netlink import CLEAN, Impairment
from appliance.bench.netns import KIOSK_ADDR, ROOM_ADDR, NamespacePair, unavailable
from appliance.demo.provision import Approver, provision_room
from appliance.demo.supervisor import SOCKET_ACTIVATED
from appliance.errors import StateError

ROOM_PORT = 8443
ROOM_URL = f"http://{ROOM_ADDR}:{ROOM_PORT}"
ROOM_NAME = "Network bench"
SCENARIO_PERIOD_S = 10.0
CAMERA_FPS = 30  # the sim camera's default (camera.fps); the video target is against it

ROOM_START_S = 60.0
KIOSK_START_S = 180.0
FIRST_VIDEO_S = 60.0
FIRST_ALERT_S = 120.0
STOP_S = 30.0

ROOM_TOML = """\
# Written by `appliance bench network`: the room service in its own network namespace.
[service]
host = "{host}"
port = {port}
public_url = "{url}"
database = "{database}"

[pairing]
interval_s = 1
"""

# One febrile visitor every period: walks up, holds still, leaves; the scene is empty between.
SCENARIO_TOML = """\
# Written by `appliance bench network`: a fever alert every {period:.0f} s.
name = "network-bench"
duration = {period}
loop = true
seed = 11

[ambient]
temperature = 22.0

[[person]]
name = "febrile"
enter = 1.0
approach = 1.5
dwell = 4.0
leave = 1.5
distance = 0.45
face_height = 0.03
core_temp = 39.0
"""


@dataclass(frozen=True)
class Plan:
    baseline_s: float = 10.0
    impaired_s: float = 30.0
    settle_s: float = 8.0
    partition_s: float = 30.0
    recover_s: float = 45.0
    linger_s: float = 5.0
    delay_s: float = 0.2
    loss: float = 0.05
    seed: int = 8


# --- children ------------------------------------------------------------------------------------


@dataclass
class Child:
    """A process in a namespace, its output read line by line as it comes."""

    name: str
    argv: list[str]
    env: dict[str, str]
    on_line: Any = None  # (line, monotonic time) -> None
    tail: list[str] = field(default_factory=list)
    proc: asyncio.subprocess.Process | None = None
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: stopped as one, whatever it forks
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._read(self.proc.stdout)),
            asyncio.ensure_future(self._read(self.proc.stderr)),
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line_b := await stream.readline():
            line = line_b.decode(errors="replace").rstrip()
            self.tail = [*self.tail[-60:], line]
            if self.on_line is not None:
                self.on_line(line, time.monotonic())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout: float = STOP_S) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # Whatever it started and left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return proc.returncode

    def describe(self) -> str:
        return f"{self.name}: " + " | ".join(self.tail[-8:])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in (
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Kiosk:
    """`appliance demo --headless --room-url ...` in the kiosk's namespace; approves its codes."""

    def __init__(
        self, pair: NamespacePair, work: Path, scenario: Path, approver: Approver, cap_s: float
    ) -> None:
        self.work = work
        self.approver = approver
        self.names: list[str] = []
        self.ready: set[str] = set()
        self.kiosk_line: str | None = None
        self.approved: list[str] = []
        self.incidents: list[str] = []
        env = child_env()
        env["APPLIANCE_DEMO_SETUP_PORT"] = "8080"  # the namespace's own loopback: always free
        argv = [
            sys.executable,
            "-m",
            "appliance",
            "demo",
            "--headless",
            "--room-url",
            ROOM_URL,
            "--scenario",
            str(scenario),
            "--workdir",
            str(work),
            "--for",
            str(int(cap_s)),
            "--report",
            str(work.parent / "demo-report.json"),
        ]
        self.child = Child("kiosk", pair.exec_argv(pair.kiosk, argv), env, self._line)

    @property
    def bus_socket(self) -> Path:
        return self.work / "run" / "bus.sock"

    @property
    def state_dir(self) -> Path:
        return self.work / "state"

    def _line(self, line: str, _t: float) -> None:
        if m := re.match(r"appliance demo: running (.+) \(work dir", line):
            self.names = [n.strip() for n in m.group(1).split(",")]
        elif m := re.search(r"pairing code: (\S+)", line):
            if self.approver.approve(m.group(1)):
                self.approved.append(m.group(1))
        elif "kiosk:" in line:
            self.kiosk_line = line.strip()
        elif m := re.search(r"demo INFO: (\S+) ready in", line):
            self.ready.add(m.group(1))
        elif "exited with" in line or "missed its watchdog" in line:
            self.incidents.append(line)

    async def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # The setup page starts on its first visit, which this bench never makes.
        while not (self.names and self.kiosk_line and self.ready >= set(self.names) - SOCKET_ACTIVATED):
            if not self.child.running:
                raise RuntimeError(f"the kiosk's demo ended early; {self.child.describe()}")
            if time.monotonic() > deadline:
                missing = sorted(set(self.names) - SOCKET_ACTIVATED - self.ready)
                raise RuntimeError(f"the kiosk did not start within {timeout:.0f} s (not ready: {missing})")
            await asyncio.sleep(0.2)
        if "paired with" not in self.kiosk_line:
            raise RuntimeError(f"the kiosk is not paired: {self.kiosk_line}")


class RoomConnection:
    """The publisher's call.state on the kiosk's bus: when its room link came and went."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.changes: list[tuple[float, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._bus: Any = None

    async def start(self) -> None:
        from appliance.bus.client import BusClient

        self._bus = BusClient(self.socket, "bench-network")
        await self._bus.connect(timeout=30)
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        from appliance.bus.topics import CallState

        async for rx in self._bus.subscribe("call.state", maxsize=256):
            if isinstance(rx.msg, CallState):
                connected = rx.msg.room_connected
                if not self.changes or self.changes[-1][1] != connected:
                    self.changes.append((time.monotonic(), connected))

    @property
    def connected(self) -> bool:
        return bool(self.changes) and self.changes[-1][1]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._bus is not None:
            await self._bus.close()


def viewer_argv(invite: str) -> list[str]:
    # --name=value: an invite token (URL-safe base64) may begin with "-", which argparse would
    # take for an option if it came as a word of its own.
    return [sys.executable, "-m", "appliance.bench.netviewer", f"--base={ROOM_URL}", f"--invite={invite}"]


class ViewerProcess:
    """appliance.bench.netviewer in the room's namespace; its records as they come."""

    def __init__(self, pair: NamespacePair, invite: str) -> None:
        self.records: list[dict[str, Any]] = []
        self.bad_lines: list[str] = []
        self.child = Child("viewer", pair.exec_argv(pair.room, viewer_argv(invite)), child_env(), self._line)

    def _line(self, line: str, _t: float) -> None:
        if not line.startswith("{"):
            return  # stderr: aiortc's and aiohttp's own complaints, kept in the tail
        try:
            self.records.append(json.loads(line))
        except json.JSONDecodeError:
            self.bad_lines.append(line)

    @property
    def frames(self) -> int:
        return next((r["n"] for r in reversed(self.records) if r["kind"] == "frames"), 0)

    async def wait_video(self, timeout: float, frames: int = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.frames < frames:
            if not self.child.running:
                raise RuntimeError(f"the viewer ended early; {self.child.describe()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no video at the viewer within {timeout:.0f} s; {self.child.describe()}")
            await asyncio.sleep(0.2)

    async def wait_alert(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.alerts_seen():
            if not self.child.running:
                raise RuntimeError(f"the viewer ended early; {self.child.describe()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no fever alert at the viewer within {timeout:.0f} s")
            await asyncio.sleep(0.2)

    def alerts_seen(self) -> set[int]:
        return {r["seq"] for r in self.records if r["kind"] == "event" and r["topic"] == ALERT}


def stored_alerts(state_dir: Path) -> list[tuple[int, float]]:
    """(seq, wall_ts) of every fever alert in the kiosk's events.db."""
    from appliance.screening.events import EventStore, path_in

    with EventStore.open_readonly(path_in(state_dir)) as store:
        return [(e.seq, e.wall_ts) for e in store.rows() if e.topic == ALERT]


# --- the run -------------------------------------------------------------------------------------


class Run:
    def __init__(self, plan: Plan, work: Path, pair: NamespacePair) -> None:
        self.plan = plan
        self.work = work
        self.pair = pair
        self.mono: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.mono[name] = time.monotonic()
        self.wall[name] = time.time()

    def log(self, text: str) -> None:
        print(f"bench network: {text}", file=sys.stderr, flush=True)

    async def __call__(self) -> dict[str, Any]:
        plan, work, pair = self.plan, self.work, self.pair
        room_dir, kiosk_dir = work / "room", work / "kiosk"
        room_dir.mkdir()
        kiosk_dir.mkdir()
        scenario = work / "scenario.toml"
        scenario.write_text(SCENARIO_TOML.format(period=SCENARIO_PERIOD_S))
        database = room_dir / "room.db"
        made = provision_room(database, ROOM_NAME)
        (room_dir / "room.toml").write_text(
            ROOM_TOML.format(
                host=ROOM_ADDR, port=ROOM_PORT, url=ROOM_URL, database=json.dumps(str(database))[1:-1]
            )
        )
        os.chmod(room_dir / "room.toml", 0o600)
        approver = Approver(database, made.admin, made.room_id)
        total = plan.baseline_s + plan.impaired_s + plan.settle_s + plan.partition_s + plan.recover_s
        room = Child(
            "room",
            pair.exec_argv(
                pair.room,
                [sys.executable, "-m", "appliance", "run", "room", "--config", str(room_dir / "room.toml")],
            ),
            child_env(),
        )
        cap_s = KIOSK_START_S + FIRST_VIDEO_S + FIRST_ALERT_S + total + 120
        kiosk = Kiosk(pair, kiosk_dir / "demo", scenario, approver, cap_s)
        viewer = ViewerProcess(pair, made.invite)
        room_link = RoomConnection(kiosk.bus_socket)
        started = time.monotonic()
        try:
            pair.link.set(CLEAN)
            await room.start()
            await self._wait_line(room, "room service on", ROOM_START_S)
            self.log(f"room service up in ns {pair.room} at {ROOM_URL}")
            await kiosk.child.start()
            await kiosk.wait_started(KIOSK_START_S)
            self.log(f"kiosk up in ns {pair.kiosk} ({KIOSK_ADDR}), paired")
            await room_link.start()
            await viewer.child.start()
            await viewer.wait_video(FIRST_VIDEO_S)
            startup_s = time.monotonic() - started
            self.log(f"viewer has video after {startup_s:.1f} s; waiting for the first alert")
            # The thermal sensor warms up and the screening learns the empty scene first (about
            # half a minute): phases that start after the first alert each see several.
            await viewer.wait_alert(FIRST_ALERT_S)
            self.log("first alert at the viewer; baseline")

            self.mark("baseline")
            await asyncio.sleep(plan.baseline_s)
            pair.link.set(Impairment(delay_s=plan.delay_s, loss=plan.loss))
            self.mark("impaired")
            self.log(f"impaired: {plan.delay_s * 1000:.0f} ms one way, {plan.loss:.0%} loss each way")
            await asyncio.sleep(plan.impaired_s)
            pair.link.set(CLEAN)
            self.mark("settle")
            await asyncio.sleep(plan.settle_s)
            pair.link.set(Impairment(partitioned=True))
            self.mark("partition")
            self.log(f"partition for {plan.partition_s:.0f} s")
            await asyncio.sleep(plan.partition_s)
            pair.link.set(CLEAN)
            self.mark("heal")
            self.log("healed; waiting for the publisher, the video and the missed alerts")
            await self._recover(kiosk, viewer, room_link)
            self.mark("recovered")
            await asyncio.sleep(plan.linger_s)
            self.mark("end")
        finally:
            await viewer.child.stop()
            await room_link.stop()
            kiosk_code = await kiosk.child.stop(STOP_S + 30)
            await room.stop()
            approver.close()
        alerts = stored_alerts(kiosk.state_dir)
        result: dict[str, Any] = {
            "link": "userspace TUN relay (this kernel has no sch_netem)",
            "delay_one_way_ms": round(plan.delay_s * 1000),
            "loss_each_way": plan.loss,
            "camera_fps": CAMERA_FPS,
            "partition_s": plan.partition_s,
        }
        result.update(figures(Marks(self.mono, self.wall), viewer.records, room_link.changes, alerts))
        result.update(
            startup_s=round(startup_s, 1),
            link_packets=pair.link.stats(),
            kiosk_exit=kiosk_code,
            kiosk_incidents=kiosk.incidents[-5:],
            scenario_period_s=SCENARIO_PERIOD_S,
            phases_s={
                "baseline": plan.baseline_s,
                "impaired": plan.impaired_s,
                "settle": plan.settle_s,
                "partition": plan.partition_s,
                "recovered_after": round(self.mono["end"] - self.mono["heal"], 1),
            },
            elapsed_s=round(time.monotonic() - started, 1),
        )
        return result

    async def _wait_line(self, child: Child, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in child.tail):
            if not child.running:
                raise RuntimeError(f"{child.name} ended early; {child.describe()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name}: no {text!r} within {timeout:.0f} s; {child.describe()}")
            await asyncio.sleep(0.1)

    async def _recover(self, kiosk: Kiosk, viewer: ViewerProcess, room_link: RoomConnection) -> None:
        """Until the publisher is back, the video has run steadily again and every alert raised so
        far reached the viewer, or the plan's recover_s."""
        heal = self.mono["heal"]
        deadline = heal + self.plan.recover_s
        while time.monotonic() < deadline:
            back = any(up and t >= heal for t, up in room_link.changes)
            video = steady_resume(viewer.records, heal, time.monotonic()) is not None
            if back and video:
                try:
                    raised = {seq for seq, ts in stored_alerts(kiosk.state_dir) if ts < self.wall["heal"]}
                except (StateError, sqlite3.Error):  # busy or not there yet: try again
                    raised = {-1}
                if raised <= viewer.alerts_seen():
                    return
            await asyncio.sleep(0.5)


async def _run(plan: Plan) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="appliance-bench-network-") as tmp:
        os.chmod(tmp, 0o755)
        with NamespacePair.create(str(os.getpid()), seed=plan.seed) as pair:
            return await Run(plan, Path(tmp), pair)()


def bench_network(quick: bool = False, plan: Plan | None = None) -> dict[str, Any]:
    """The phases are the issue's whatever `quick` says: a shorter partition would not show
    whether the publisher's backoff outgrows the 5 s target."""
    reason = unavailable()
    if reason is not None:
        return {"skipped": reason, "targets": {}}
    return asyncio.run(_run(plan or Plan()))
