"""`appliance bench video`: what passing H.264 through saves, and how fast a picture arrives.

Every party is its own process, as on a device and on the network: the broker (`appliance run
bus`), the camera (`appliance run camera`, sim backend, 640x480 at 30 fps, its frame stamp in
every picture), the real room service (`appliance run room`, one room provisioned in its
database), the publisher under test, and the viewers (aiortc in a load process; for latency,
Debian's headless Chromium on the viewer page). The publisher runs `PublisherService` exactly as
`appliance run publisher` does; only its video source differs between the runs:

    passthrough   CameraFeed: camera.h264 passed through, packetised once, sent to each viewer (the product)
    reencode      aiortc's own way: raw 640x480 frames -> MediaRelay -> one libx264 encoder per
                  viewer (aiortc's H264Encoder), as a publisher that does not pass through would
    encode        the same with one viewer: software encoding in the publisher

The raw frames for the encoding runs come from the camera daemon's shared-memory preview ring,
configured at the full 640x480 for this benchmark, so those runs pay for encoding and not for
decoding H.264 first (the comparison favours them). Publisher CPU is its process's CPU time
(every thread, encoder threads included; the kernel's process CPU clock, to the nanosecond:
measure.cpu_seconds) over the measurement window; the 1- and
4-viewer passthrough figures come from one publisher process, viewers added between windows.
The headline viewers leave the kiosk's sound off (see bench_video); `full_call` has them
listening too.

Figures (JSON keys):
    fanout_cpu_ratio_4v_1v                publisher CPU, passthrough, 4 viewers / 1 viewer
    cpu_ratio_reencode_vs_passthrough_4v  publisher CPU with 4 viewers, reencode / passthrough
    cpu_ratio_encode_vs_passthrough       publisher CPU with 1 viewer, encode / passthrough
    g2g_p50_ms, g2g_p95_ms                glass to glass: the stamp's capture time to the moment
                                          Chromium presents the frame (requestVideoFrameCallback),
                                          both wall clocks of this machine
    join_to_first_frame_ms                the slowest of several joins: from the page starting to
                                          join (before it asks for a session) to its first
                                          decoded frame
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from appliance.bench.measure import cpu_seconds, quantile
from appliance.bench.room import _start_service, provision
from appliance.demo.notify import parse_notify

WIDTH, HEIGHT, FPS = 640, 480, 30
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Host addresses in ICE candidates instead of mDNS names: nothing multicast leaves the machine.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
TARGETS = {
    "fanout_cpu_ratio_4v_1v": "<= 1.5",
    "cpu_ratio_reencode_vs_passthrough_4v": ">= 8",
    "cpu_ratio_encode_vs_passthrough": ">= 10",
    "g2g_p50_ms": "<= 120",
    "g2g_p95_ms": "<= 200",
    "join_to_first_frame_ms": "<= 1000",
}

KIOSK_CONFIG = f"""\
[bus]
allowed_groups = []

[camera]
backend = "sim"
width = {WIDTH}
height = {HEIGHT}
fps = {FPS}
preview_width = {WIDTH}
preview_height = {HEIGHT}

[publisher]
audio_backend = "sim"
max_viewers = 4
remote_video = false
"""

ROOM_CONFIG = """\
[service]
host = "127.0.0.1"
port = 0
database = "{db}"

[rooms]
viewer_session_per_address_per_min = 1000000
viewer_session_overall_per_min = 1000000
ws_connect_per_address_per_min = 1000000
ws_connect_overall_per_min = 1000000
"""


# --- the kiosk's daemons -------------------------------------------------------------------------


class Kiosk:
    """The broker and the camera daemon in a scratch run directory, paired with the room service."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "kiosk"
        self.dir.mkdir()
        self.config = self.dir / "appliance.toml"
        self.config.write_text(KIOSK_CONFIG)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_", "INVOCATION_ID", "JOURNAL_STREAM"))
        }
        self.env.update(
            APPLIANCE_RUN_DIR=str(self.dir),
            APPLIANCE_STATE_DIR=str(self.dir),
            APPLIANCE_CONFIG=str(self.config),
            APPLIANCE_LOG_LEVEL="WARNING",
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        # The notify socket stays open for the daemon's life, as systemd's does: a daemon whose
        # STATUS= updates are refused takes that as a failure.
        notify = self.dir / f"{name}.notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify))
        sock.settimeout(30)
        self.sockets.append(sock)
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it for its life
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**self.env, "NOTIFY_SOCKET": str(notify)},
        )
        log.close()
        self.procs.append(proc)
        try:
            while parse_notify(sock.recv(4096)).get("READY") != "1":
                pass
        except TimeoutError:
            text = (self.dir / f"{name}.log").read_text()[-2000:]
            raise RuntimeError(f"{name} did not start: {text}") from None
        # And read on, as systemd does: a datagram socket nobody reads takes only
        # net.unix.max_dgram_qlen messages (10 by default), after which the daemon's next
        # sd_notify blocks, and with it the daemon's event loop (the broker's status line every
        # few seconds stopped the bus after about three minutes).
        reader = threading.Thread(target=self._drain, args=(sock,), name=f"notify-{name}", daemon=True)
        reader.start()
        self._readers.append(reader)
        return proc

    def _drain(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._stop.set()
        for reader in self._readers:
            reader.join(5)
        for sock in self.sockets:
            sock.close()


# --- the publisher under test (its own process) --------------------------------------------------


def _ring_video(bus: Any, run_dir: Path) -> Any:
    """aiortc's re-encoding path: raw frames from the preview ring, MediaRelay, its encoder."""
    import av
    import numpy as np
    from aiortc.contrib.media import MediaRelay
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from appliance.bus.framering import FrameRingReader, ring_path
    from appliance.bus.topics import FrameRingNotice
    from appliance.camera import PREVIEW_RING

    notices = bus.subscribe("camera.preview", maxsize=2)

    class RingTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.reader: FrameRingReader | None = None

        async def recv(self) -> av.VideoFrame:
            while True:
                try:
                    msg = (await notices.get()).msg
                except StopAsyncIteration:  # the subscription closed: the publisher is stopping
                    self.stop()
                    raise MediaStreamError from None  # how a track ends, for MediaRelay
                assert isinstance(msg, FrameRingNotice)
                if self.reader is None:
                    self.reader = FrameRingReader.open(ring_path(PREVIEW_RING, run_dir))
                got = self.reader.read(msg.frame_seq)
                if got is None:
                    continue  # overwritten before we read it: take the next
                image = np.asarray(got.pixels).reshape(HEIGHT, WIDTH, 3)
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts = round(got.capture_ts * 90_000)
                frame.time_base = Fraction(1, 90_000)
                return frame

    class RelayedVideo:
        def __init__(self) -> None:
            self.report_clock = None  # aiortc's own RTCP report timers
            self.relay = MediaRelay()
            self.source = RingTrack()

        def track(self) -> MediaStreamTrack:
            return self.relay.subscribe(self.source, buffered=False)

        def picture_lost(self) -> None:
            pass  # aiortc's encoder acts on the PLI itself (peer.py calls its original hook)

    return RelayedVideo()


def _publisher_process(mode: str, env: dict[str, str], room_url: str, token: str, ready: Any) -> None:
    os.environ.update(env)

    async def run() -> None:
        from appliance.bus.client import BusClient
        from appliance.config import load_config
        from appliance.publisher.service import PublisherService
        from appliance.publisher.signaling import Credentials

        config = load_config()
        bus = BusClient(config.bus_socket, "publisher")
        await bus.connect(30)

        async def credentials() -> Credentials:
            return Credentials(room_url, token)

        video = None if mode == "passthrough" else _ring_video(bus, config.paths.run_dir)
        service = PublisherService(bus, config, credentials, video=video)
        tasks: list[asyncio.Task[Any]] = []

        def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
            task = asyncio.ensure_future(coro)
            tasks.append(task)
            return task

        await service.start(spawn)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.put(os.getpid())
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.aclose()
        await bus.close()

    asyncio.run(run())


# --- aiortc viewers (the load process) -----------------------------------------------------------


async def _viewer(
    base: str, invite: str, frames: list[int], counting: asyncio.Event, all_seen: asyncio.Event, listen: bool
) -> Any:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from appliance.room import protocol as p

    session = aiohttp.ClientSession()
    async with session.post(f"{base}/api/v1/viewer/session", json={"invite": invite}) as resp:
        token = (await resp.json())["session"]
    ws = await session.ws_connect(base.replace("http://", "ws://") + f"/api/v1/ws?session={token}")
    pcs: list[RTCPeerConnection] = []
    slot = len(frames)
    frames.append(0)

    async def consume(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind == "video" and (counting.is_set() or frames[slot] == 0):
                    frames[slot] += 1
                    if all(frames):
                        all_seen.set()

    def on_channel(channel: Any) -> None:
        # A viewer that unmuted: asks for the kiosk's sound once the events channel is up.
        if channel.label == "events":
            channel.on(
                "message", lambda data: '"hello"' in data and channel.send('{"type":"listen","on":true}')
            )

    async def signaling() -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            msg = p.decode_to_client(message.data)
            if isinstance(msg, p.Offer):
                pc = RTCPeerConnection()
                pcs.append(pc)
                pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
                if listen:
                    pc.on("datachannel", on_channel)
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await ws.send_str(p.encode(p.Answer(sdp=pc.localDescription.sdp)))

    task = asyncio.ensure_future(signaling())

    async def close() -> None:
        task.cancel()
        for pc in pcs:
            await pc.close()
        await ws.close()
        await session.close()

    return close


def _viewers_process(base: str, invite: str, counts: list[int], listen: bool, cmd: Any, out: Any) -> None:
    """Viewers in stages: up to counts[0] viewers, measured, then up to counts[1], and so on."""

    async def run() -> None:
        frames: list[int] = []
        counting, all_seen = asyncio.Event(), asyncio.Event()
        closers: list[Any] = []
        loop = asyncio.get_running_loop()
        for count in counts:
            all_seen.clear()
            while len(closers) < count:
                closers.append(await _viewer(base, invite, frames, counting, all_seen, listen))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await all_seen.wait()
            out.put(("ready", list(frames)))
            await loop.run_in_executor(None, cmd.get)  # go
            for i in range(len(frames)):
                frames[i] = 0
            counting.set()
            await loop.run_in_executor(None, cmd.get)  # stop
            counting.clear()
            out.put(("frames", list(frames)))
        for close in closers:
            await close()

    try:
        asyncio.run(run())
    except BaseException as exc:  # the parent must hear of it rather than wait forever
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def _expect(out: Any, kind: str, timeout: float) -> list[int]:
    got, value = out.get(timeout=timeout)
    if got == "error":
        raise RuntimeError(f"viewers: {value}")
    assert got == kind, (got, kind)
    frames: list[int] = value
    return frames


# --- CPU runs ------------------------------------------------------------------------------------


def _cpu_runs(
    mode: str,
    counts: list[int],
    kiosk: Kiosk,
    room: tuple[str, str, str],
    seconds: float,
    *,
    listen: bool,
) -> dict[int, dict[str, Any]]:
    """One publisher process; viewers added in stages (e.g. 1, then 4), its CPU measured at each."""
    base, token, invite = room
    ctx = mp.get_context("spawn")
    ready_pub: Any = ctx.Queue()
    pub = ctx.Process(target=_publisher_process, args=(mode, kiosk.env, base, token, ready_pub))
    pub.start()
    load = None
    results: dict[int, dict[str, Any]] = {}
    try:
        pid = ready_pub.get(timeout=60)
        cmd, out = ctx.Queue(), ctx.Queue()
        load = ctx.Process(target=_viewers_process, args=(base, invite, counts, listen, cmd, out))
        load.start()
        for count in counts:
            first = _expect(out, "ready", 90)
            if len(first) != count or not all(first):
                raise RuntimeError(f"{mode}: not every viewer got video ({first})")
            time.sleep(3.0)  # past the start: ICE, DTLS, the first keyframe, a listener's audio
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            cmd.put("go")
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            cmd.put("stop")
            frames = _expect(out, "frames", 30)
            results[count] = {
                "cpu_percent": round((cpu1 - cpu0) / (t1 - t0) * 100, 2),
                "viewer_fps": [round(f / (t1 - t0), 1) for f in frames],
            }
        load.join(30)
    finally:
        if load is not None and load.is_alive():
            load.kill()
        if pub.pid is not None and pub.is_alive():
            os.kill(pub.pid, signal.SIGTERM)
            pub.join(15)
            if pub.is_alive():
                pub.kill()
    return results


# --- Chromium: joins and glass to glass ------------------------------------------------------------


_FIRST_FRAME = "window.viewer && window.viewer.firstFrameAt !== null"
_JOIN_MS = "window.viewer.firstFrameAt - window.viewer.joinStartedAt"


async def _chromium(base: str, invite: str, joins: int, seconds: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    url = f"{base}/view/{invite}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            join_ms: list[float] = []
            for _ in range(joins):
                page = await browser.new_page()
                await page.goto(url)
                await page.wait_for_function(_FIRST_FRAME, timeout=30000)
                join_ms.append(await page.evaluate(_JOIN_MS))
                await page.close(run_before_unload=True)
                await asyncio.sleep(1.0)  # the kiosk drops the call; the next join is a new one
            page = await browser.new_page()
            await page.goto(url)
            await page.wait_for_function(_FIRST_FRAME, timeout=30000)
            await asyncio.sleep(2.0)  # settled: the jitter buffer at its steady size
            await page.evaluate("window.viewer.startLatencyProbe()")
            await asyncio.sleep(seconds)
            samples = await page.evaluate("window.viewer.stopLatencyProbe()")
            await page.close()
        finally:
            await browser.close()
    latencies = [float(s["latencyMs"]) for s in samples]
    if not latencies:
        raise RuntimeError("Chromium read no frame stamp")
    counters = [int(s["counter"]) for s in samples]
    return {
        "join_ms": join_ms,
        "latencies": latencies,
        "frames_read": len(samples),
        "frames_sent": (counters[-1] - counters[0]) % 2**32 + 1,
    }


# --- the suite ---------------------------------------------------------------------------------


FANOUT_REPEATS = 5  # the headline fan-out stages, median of (see _scenario)


def _ratios(cpu: dict[str, float]) -> dict[str, float]:
    out = {
        "fanout_cpu_ratio_4v_1v": round(cpu["passthrough_4v"] / cpu["passthrough_1v"], 3),
        "cpu_ratio_encode_vs_passthrough": round(cpu["encode_1v"] / cpu["passthrough_1v"], 2),
    }
    if "reencode_4v" in cpu:
        out["cpu_ratio_reencode_vs_passthrough_4v"] = round(cpu["reencode_4v"] / cpu["passthrough_4v"], 2)
    return out


def _scenario(
    kiosk: Kiosk, room: tuple[str, str, str], seconds: float, *, listen: bool, repeats: int = 1
) -> dict[str, Any]:
    """The runs of one scenario: publisher CPU for each video path and viewer count.

    The fan-out stages (1 viewer, then 4) run `repeats` times, each in a fresh publisher; the
    figures are those of the run with the median 4:1 ratio. On a shared 2-core machine the
    ratio of one pair of 15 s windows ranges over +-0.15 from run to run (the publisher's CPU in
    a window moves by about 4 % either way, read to the nanosecond), so one run says little and
    the middle of five more than the middle of three; every run's ratio is in the output."""
    fanouts = [_cpu_runs("passthrough", [1, 4], kiosk, room, seconds, listen=listen) for _ in range(repeats)]
    ratios = [r[4]["cpu_percent"] / r[1]["cpu_percent"] for r in fanouts]
    passthrough = fanouts[sorted(range(repeats), key=ratios.__getitem__)[repeats // 2]]
    runs = {
        "passthrough_1v": passthrough[1],
        "passthrough_4v": passthrough[4],
        "encode_1v": _cpu_runs("encode", [1], kiosk, room, seconds, listen=listen)[1],
    }
    if not listen:  # the heavy baseline runs once, in the headline scenario
        runs["reencode_4v"] = _cpu_runs("reencode", [4], kiosk, room, seconds, listen=listen)[4]
    cpu = {name: run["cpu_percent"] for name, run in runs.items()}
    return {
        **_ratios(cpu),
        "fanout_cpu_ratio_4v_1v_runs": [round(r, 3) for r in ratios],
        "publisher_cpu_percent": cpu,
        "viewer_fps": {name: run["viewer_fps"] for name, run in runs.items()},
    }


def bench_video(quick: bool = False) -> dict[str, Any]:
    """The headline figures compare video paths, so their viewers take video and the data
    channels and leave the kiosk's sound off (the viewer page's initial state: the kiosk then
    opens no microphone). The sound is the same work on every video path, so it would only add
    the same amount to both sides of each ratio; `full_call` repeats the passthrough and encode
    runs with viewers who unmuted (the microphone encoded once, Opus to each of them)."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is needed (Debian's chromium package; make deps installs it)")
    seconds = 4.0 if quick else 15.0
    joins = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "room.toml").write_text(ROOM_CONFIG.format(db=tmp / "room.db"))
        [(token, invite)] = provision(tmp / "room.db", 1)
        service, base = _start_service(tmp / "room.toml", tmp / "room.notify", tmp / "room.log")
        room = (base, token, invite)
        kiosk = Kiosk(tmp)
        try:
            kiosk.start("bus")
            camera = kiosk.start("camera")
            camera_cpu0, camera_t0 = cpu_seconds(camera.pid), time.monotonic()
            video_only = _scenario(kiosk, room, seconds, listen=False, repeats=1 if quick else FANOUT_REPEATS)
            full_call = _scenario(kiosk, room, seconds, listen=True)
            camera_cpu = (cpu_seconds(camera.pid) - camera_cpu0) / (time.monotonic() - camera_t0)
            ctx = mp.get_context("spawn")
            ready: Any = ctx.Queue()
            pub = ctx.Process(target=_publisher_process, args=("passthrough", kiosk.env, base, token, ready))
            pub.start()
            try:
                ready.get(timeout=60)
                browser = asyncio.run(_chromium(base, invite, joins, seconds))
            finally:
                if pub.pid is not None and pub.is_alive():
                    os.kill(pub.pid, signal.SIGTERM)
                    pub.join(15)
        finally:
            kiosk.stop()
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(10)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()

    lat = browser["latencies"]
    return {
        **video_only,
        "g2g_p50_ms": round(statistics.median(lat), 1),
        "g2g_p95_ms": round(quantile(lat, 0.95), 1),
        "join_to_first_frame_ms": round(max(browser["join_ms"]), 1),
        "join_to_first_frame_all_ms": [round(x, 1) for x in browser["join_ms"]],
        "full_call": full_call,
        "camera_cpu_percent": round(camera_cpu * 100, 1),
        "g2g_frames_read": browser["frames_read"],
        "g2g_frames_sent": browser["frames_sent"],
        "video": f"{WIDTH}x{HEIGHT} at {FPS} fps, H.264 constrained baseline from the camera daemon",
        "seconds": seconds,
        "targets": dict(TARGETS),
    }


if __name__ == "__main__":
    print(json.dumps(bench_video(quick="--quick" in sys.argv)))
