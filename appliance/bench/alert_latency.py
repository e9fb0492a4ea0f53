"""Frame-to-alert latency: from publishing the thermal frame that decides an elevated result to
another process receiving its ``alert.fever``.

Every party is its own process, as on the device: the real broker (`appliance run bus`) and
the real screening daemon (`appliance run screening`, mock GPIO, a temporary events.db) as
subprocesses; this process publishes ``thermal.frame``; a subscriber process
(``python -m appliance.bench.alert_latency subscribe SOCKET``) timestamps each ``alert.fever``
and ``screening.result`` on arrival. Both sides read CLOCK_MONOTONIC, which is one clock for
the whole machine.

The scene is synthetic (an empty room, then one feverish person after another stepping up
and holding still), rendered like tests/screening/synth.py. The face temperature is chosen by
asking the screening core itself which face reads well above the threshold, so the bench
does not depend on the estimator's fitted coefficients. The same core, run here on the same
frames, predicts which frame decides each result; the daemon's results are checked against
that prediction (``predicted_ends_matched``).

``measure_append_cost`` adds what one result costs to commit to events.db, with
synchronous=FULL and as the daemon does it, the figures behind the choice in events.py.

Frames carry envelope times 0.1 s apart (the sensor's 10 fps), which is the time the machine
sees, but are sent ``speedup`` times faster, so that hundreds of people take a minute or two
rather than ten. The latency is measured in real time: from the moment the deciding frame
was handed to the socket (its publish) to the moment the subscriber has the alert. The
frame is identified by its envelope time, which the result carries as ``end``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from appliance.bus.client import BusClient
from appliance.bus.topics import EchoParams, FeverAlert, ScreeningResult, ThermalFrame
from appliance.config import load_config
from appliance.demo.notify import NotifySocket
from appliance.screening.configure import settings_for
from appliance.screening.events import Draft, EventStore
from appliance.screening.machine import ScreeningMachine
from appliance.screening.records import FrameInput
from appliance.screening.settings import ScreeningSettings

TARGET_P99_MS = 5.0
FRAME_S = 0.1  # the sensor's 10 fps: the spacing of envelope times
AMBIENT_C = 22.0
THERMISTOR_C = 24.0

CONFIG = """\
# Written by the alert-latency bench: sim settings, no warm-up, everything in this directory.
[paths]
state_dir = "{state}"
run_dir = "{run}"

[bus]
allowed_groups = []
socket_mode = 0o600

[thermal]
backend = "sim"
warmup_s = 0.0

[screening]
system_warmup_s = 0.0

[gpio]
pin_factory = "mock"
"""


def write_config(workdir: Path) -> Path:
    """A config for a broker and a screening daemon living entirely under ``workdir``."""
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    path = workdir / "appliance.toml"
    path.write_text(CONFIG.format(state=workdir / "state", run=workdir / "run"))
    return path


def child_env(config: Path, notify: Path | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))
        # The paths come from the config file alone (these would override it).
        and k not in ("INVOCATION_ID", "JOURNAL_STREAM", "APPLIANCE_STATE_DIR", "APPLIANCE_RUN_DIR")
    }
    env.update(APPLIANCE_CONFIG=str(config), GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify)
    return env


class DaemonProcess:
    """`python -m appliance run NAME` as systemd would run it: ready when it says READY=1."""

    def __init__(self, name: str, config: Path, workdir: Path, *, nice: int = 0) -> None:
        self.name = name
        self.config = config
        self.workdir = workdir
        self.nice = nice
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._notify = NotifySocket(workdir / f"{name}.notify", self._on_notify)
        self._log: IO[bytes] | None = None

    def _on_notify(self, msg: dict[str, str]) -> None:
        if msg.get("READY") == "1":
            self._ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> None:
        await self._notify.open()
        self._ready.clear()
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: ASYNC230, SIM115 - lives with the child
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "run",
            self.name,
            env=child_env(self.config, self._notify.path),
            stdout=self._log,
            stderr=self._log,
            preexec_fn=_niceness(self.nice),
        )
        ready = asyncio.ensure_future(self._ready.wait())
        died = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({ready, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for fut in (ready, died):
            if fut not in done:
                fut.cancel()
        if ready not in done:
            await self.stop()
            raise RuntimeError(f"{self.name} did not get ready: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut would be for the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 10.0) -> int:
        code = 0
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    code = await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                code = await self.proc.wait()
        self._notify.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# --- the synthetic scene (as tests/screening/synth.py, trimmed) ----------------------------------

_PITCH = 2.0 * math.tan(math.radians(30.0)) / 8.0
_SUB = 16
_COORDS = (np.arange(8 * _SUB) + 0.5) / _SUB
_ROWS, _COLS = np.meshgrid(_COORDS, _COORDS, indexing="ij")


def render(
    face_c: float | None, rng: np.random.Generator, *, distance_m: float = 0.45, noise_sd: float = 0.16
) -> npt.NDArray[np.float64]:
    """One 8x8 frame: an empty room, or a head and shoulders at ``distance_m``, centred."""
    scene = np.full(_ROWS.shape, AMBIENT_C)
    if face_c is not None:
        half_w = 0.16 / (2 * distance_m * _PITCH)
        half_h = 0.21 / (2 * distance_m * _PITCH)
        r0, c0 = 3.0, 4.0
        scene[(r0 + 0.8 * half_h < _ROWS) & (np.abs(_COLS - c0) < 2.6 * half_w)] = 29.0
        neck = (r0 < _ROWS) & (r0 + 1.3 * half_h > _ROWS) & (np.abs(_COLS - c0) < 0.55 * half_w)
        scene[neck] = face_c - 0.5
        scene[((_ROWS - r0) / half_h) ** 2 + ((_COLS - c0) / half_w) ** 2 <= 1.0] = face_c
    pixels = scene.reshape(8, _SUB, 8, _SUB).mean(axis=(1, 3))
    pixels = pixels + rng.normal(0.0, noise_sd, pixels.shape)
    return np.round(pixels * 4.0) / 4.0  # the sensor's 0.25 degC steps


@dataclass
class Script:
    """Frames to publish (envelope time offsets from the start) and what the core predicts."""

    frames: list[tuple[float, npt.NDArray[np.float64]]] = field(default_factory=list)
    # Envelope time offset of each frame that decides a result, and that result.
    decisions: list[tuple[float, str]] = field(default_factory=list)
    face_c: float = 0.0


def fever_face(settings: ScreeningSettings, seed: int = 3) -> float:
    """A face temperature the core reads about 1.2 degC above the threshold."""
    best, best_err = None, math.inf
    for face_c in np.arange(30.0, 41.0, 0.25):
        machine, rng, t = ScreeningMachine(settings), np.random.default_rng(seed), 0.0
        result = None
        for i in range(45):
            step = machine.feed(FrameInput(t, render(None if i < 15 else float(face_c), rng), THERMISTOR_C))
            t += FRAME_S
            result = step.result or result
        if result is not None and result.result == "elevated" and result.estimate_c is not None:
            err = abs(result.estimate_c - (settings.threshold_c + 1.2))
            if err < best_err:
                best, best_err = float(face_c), err
    if best is None:
        raise RuntimeError("no synthetic face reads elevated with these settings")
    return best


def build_script(settings: ScreeningSettings, people: int, seed: int = 1) -> Script:
    """Drive the core with the scene to get the frame sequence: each person stands until the
    core decides, then the room stays empty until the core takes the next person."""
    rng = np.random.default_rng(seed)
    script = Script(face_c=fever_face(settings))
    machine = ScreeningMachine(settings)
    t = 0.0

    def feed(face: float | None) -> Any:
        nonlocal t
        px = render(face, rng)
        step = machine.feed(FrameInput(t, px, THERMISTOR_C))
        script.frames.append((t, px))
        if step.result is not None:
            script.decisions.append((t, step.result.result))
        t = round(t + FRAME_S, 9)
        return step

    while feed(None).state.state != "idle":
        if t > 60:
            raise RuntimeError("the core never left warm-up on an empty scene")
    for _ in range(people):
        for _ in range(100):
            if feed(script.face_c).result is not None:
                break
        else:
            raise RuntimeError("the core gave no result for a person standing still for 10 s")
        empty = 0
        while True:
            empty += 1
            if feed(None).state.state == "idle" and empty * FRAME_S > settings.leave_s + 0.15:
                break
    for _ in range(5):
        feed(None)
    return script


# --- the subscriber process --------------------------------------------------------------------


async def _subscribe(socket_path: str) -> None:
    async with BusClient(socket_path, "bench-alerts") as bus:
        results = bus.subscribe("screening.result", maxsize=100_000)
        alerts = bus.subscribe("alert.fever", maxsize=100_000)
        # A round trip after subscribing: the broker has both subscriptions before we say ready.
        await bus.request("bus.echo", EchoParams())
        print(json.dumps({"ready": True}), flush=True)

        async def pump(sub: Any) -> None:
            async for rx in sub:
                now = time.monotonic()
                msg = rx.msg
                line: dict[str, Any] = {"topic": rx.topic, "seq": msg.seq, "rx": now}
                if isinstance(msg, ScreeningResult):
                    line.update(end=msg.end, result=msg.result)
                elif isinstance(msg, FeverAlert):
                    line.update(estimate_c=msg.estimate_c)
                print(json.dumps(line), flush=True)

        await asyncio.gather(pump(results), pump(alerts))


# --- the bench ----------------------------------------------------------------------------------


def measure_append_cost(appends: int = 300, *, pause_s: float = 0.005) -> dict[str, Any]:
    """What one result costs to commit to events.db (a result and its alert in one
    transaction), with SQLite's synchronous=FULL and as the daemon does it (NORMAL, plus its
    durability flush in a worker thread after each commit), in ms. The pause between commits
    stands in for the seconds between people, so each commit meets a cold cache like on the
    kiosk rather than a tight loop."""
    out: dict[str, Any] = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    with tempfile.TemporaryDirectory(prefix="aapp-", dir="/tmp") as d:
        for mode in ("full", "normal"):
            store = EventStore.open(
                Path(d) / f"{mode}.db", synchronous="FULL" if mode == "full" else "NORMAL"
            )
            took: list[float] = []
            try:
                for _ in range(appends):
                    draft = Draft(time.time(), 0.0, 1.0, "elevated", 39.0, 0.9, 0.45, 24.0, threshold_c=38.0)
                    t0 = time.perf_counter()
                    store.append(draft)
                    took.append((time.perf_counter() - t0) * 1000.0)
                    if mode == "normal":
                        pool.submit(store.flush).result()
                    time.sleep(pause_s)
            finally:
                store.close()
            out[f"events_append_{mode}_p50_ms"] = round(statistics.median(took), 3)
            out[f"events_append_{mode}_p99_ms"] = round(_percentile(took, 99), 3)
            out[f"events_append_{mode}_max_ms"] = round(max(took), 3)
    pool.shutdown()
    return out


def _niceness(nice: int) -> Callable[[], None] | None:
    if not nice:
        return None

    def apply() -> None:
        os.nice(nice)

    return apply


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]


async def _run(people: int, speedup: float, workdir: Path, nice: int) -> dict[str, Any]:
    config_path = write_config(workdir)
    config = load_config(config_path, apply_env=False)
    settings = settings_for(config)
    script = build_script(settings, people)
    messages = [
        (
            off,
            ThermalFrame(pixels=px.ravel().tolist(), thermistor=THERMISTOR_C, rate_hz=10.0, frame_seq=i + 1),
        )
        for i, (off, px) in enumerate(script.frames)
    ]
    broker = DaemonProcess("bus", config_path, workdir, nice=nice)
    screening = DaemonProcess("screening", config_path, workdir, nice=nice)
    subscriber: asyncio.subprocess.Process | None = None
    await broker.start()
    try:
        await screening.start()
        subscriber = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance.bench.alert_latency",
            "subscribe",
            str(config.bus_socket),
            env=child_env(config_path),
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_niceness(nice),
        )
        assert subscriber.stdout is not None
        async with asyncio.timeout(30):
            first = await subscriber.stdout.readline()
        if not first or not json.loads(first).get("ready"):
            raise RuntimeError("the subscriber did not start")
        received: list[dict[str, Any]] = []

        async def collect() -> None:
            assert subscriber is not None and subscriber.stdout is not None
            async for raw in subscriber.stdout:
                received.append(json.loads(raw))

        collector = asyncio.create_task(collect())
        published: dict[float, float] = {}
        async with BusClient(config.bus_socket, "bench-thermal") as bus:
            base = time.monotonic() + 0.2
            interval = FRAME_S / speedup
            for i, (off, msg) in enumerate(messages):
                delay = base + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                ts = base + off
                sent = time.monotonic()
                bus.publish_nowait("thermal.frame", msg, ts=ts)
                published[ts] = sent
            wanted = sum(1 for _, r in script.decisions if r == "elevated")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if sum(1 for r in received if r["topic"] == "alert.fever") >= wanted:
                    break
                await asyncio.sleep(0.05)
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    finally:
        if subscriber is not None and subscriber.returncode is None:
            subscriber.terminate()
            await subscriber.wait()
        screening_code = await screening.stop()
        await broker.stop()
    results = {r["seq"]: r for r in received if r["topic"] == "screening.result"}
    alerts = [r for r in received if r["topic"] == "alert.fever"]
    latencies: list[float] = []
    for alert in alerts:
        result = results.get(alert["seq"])
        if result is None or result["end"] not in published:
            continue
        latencies.append((alert["rx"] - published[result["end"]]) * 1000.0)
    predicted = {round(base + off, 6) for off, _ in script.decisions}
    matched = sum(1 for r in results.values() if round(r["end"], 6) in predicted)
    # The raw timings, for a closer look (kept only when the caller keeps the directory).
    (workdir / "timings.json").write_text(
        json.dumps({"published": [[ts, sent] for ts, sent in published.items()], "received": received})
    )
    if not latencies:
        raise RuntimeError(f"no alert was received; screening log:\n{screening.log_tail()}")
    p99 = _percentile(latencies, 99)
    return {
        # Other work on the machine shows in the tail: report it with the figures.
        "frame_to_alert_loadavg_1m": round(os.getloadavg()[0], 2),
        "frame_to_alert_p50_ms": round(statistics.median(latencies), 3),
        "frame_to_alert_p99_ms": round(p99, 3),
        "frame_to_alert_max_ms": round(max(latencies), 3),
        "frame_to_alert_mean_ms": round(statistics.fmean(latencies), 3),
        "samples": len(latencies),
        "frame_to_alert_target_p99_ms": TARGET_P99_MS,
        "frame_to_alert_ok": p99 <= TARGET_P99_MS,
        "frame_to_alert_alerts_expected": sum(1 for _, r in script.decisions if r == "elevated"),
        "frame_to_alert_results_received": len(results),
        "frame_to_alert_predicted_ends_matched": matched,
        "frame_to_alert_frames": len(messages),
        "frame_to_alert_speedup": speedup,
        "frame_to_alert_face_c": script.face_c,
        "frame_to_alert_daemon_exit": screening_code,
        "frame_to_alert_nice": nice,
    }


def measure_frame_to_alert(
    quick: bool = False, *, speedup: float = 10.0, keep: Path | None = None, nice: int = 0
) -> dict[str, Any]:
    """Start a broker and a screening daemon, screen feverish people one after another, and
    return frame-to-alert latency percentiles (ms) over the alerts (>= 200, 20 with quick).

    ``nice``: the niceness of the broker, the daemon and the alert subscriber (negative needs
    CAP_SYS_NICE), to see what a unit's Nice= would buy on a loaded machine; default as is.
    """
    people = 20 if quick else 210
    workdir = Path(tempfile.mkdtemp(prefix="alat-", dir="/tmp")) if keep is None else keep
    try:
        result = asyncio.run(_run(people, speedup, workdir, nice))
        result.update(measure_append_cost(100 if quick else 500))
        return result
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "subscribe":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_subscribe(argv[1]))
        return 0
    quick = "--quick" in argv
    nice = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--nice=")), 0)
    print(json.dumps(measure_frame_to_alert(quick, nice=nice)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
