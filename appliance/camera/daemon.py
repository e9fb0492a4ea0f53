"""`appliance run camera`: H.264 for the publisher, small frames for the screen, and the camera's status.

    camera.h264     H264AccessUnit, the access unit as the attachment (telemetry)
    camera.preview  FrameRingNotice for the shared-memory ring `camera-preview` (telemetry)
    camera.status   CameraStatus ok | starting | fault | absent, with the reason (state)
    camera.keyframe Empty -> Ok: the next access unit will be an IDR

A missing or failing camera never stops the daemon: it reports the fault and the reason on
camera.status, marks its health degraded and tries again with backoff (1 s doubling to 30 s),
so the screen, the screening and the setup page go on working without video.

The preview ring is a file in the run directory (/run/appliance/camera-preview on a device),
not a memfd: the bus carries only ring names and seqs, not file descriptors, so a reader must
be able to open the ring by name, and must find it again by name after this daemon restarts.
/run is a tmpfs (no disk writes), readable only by the appliance's group, and emptied at
boot; /dev/shm would be world-listable and is cleaned by systemd's RemoveIPC behind a
service's back. The ring outlives backend restarts (same generation), so readers see a gap,
not a new ring, when the camera is retried. A ring that cannot be made (the tmpfs full, the
run directory not there yet) is tried again every RING_RETRY_S while the camera streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

from appliance.bus.client import BusClient
from appliance.bus.framering import FrameRingWriter, ring_path
from appliance.bus.topics import CameraStatus, Empty, FrameRingNotice, H264AccessUnit, Ok
from appliance.camera import PREVIEW_FORMAT, PREVIEW_RING
from appliance.camera.base import Backend, CameraAbsent, CameraStuck, StreamSettings
from appliance.camera.outlet import Outlet
from appliance.config import AppConfig
from appliance.errors import HardwareError, StateError
from appliance.runtime import Runtime

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 30.0  # a run this long resets the backoff
START_TIMEOUT_S = 20.0  # picamera2 can take seconds to configure; longer than this is a hang
STOP_TIMEOUT_S = 5.0
RING_RETRY_S = 30.0  # how often to try again to create a preview ring that could not be made

StateName = Literal["ok", "starting", "fault", "absent"]


def make_backend(config: AppConfig) -> Backend:
    """The configured backend; each one imports its libraries only when chosen."""
    settings = StreamSettings.from_config(config.camera)
    backend = config.camera.backend
    if backend == "sim":
        from appliance.camera.sim_backend import SimBackend

        return SimBackend(settings, config.sim.scenario, config.sim.seed)
    if backend == "v4l2":
        from appliance.camera.v4l2_backend import V4L2Backend

        return V4L2Backend(settings)
    from appliance.camera.picamera2_backend import Picamera2Backend

    return Picamera2Backend(settings)


def stall_timeout(fps: float) -> float:
    """No access unit for this long means the camera has stopped."""
    return max(5.0, 5.0 / fps)


class CameraService:
    """Runs the backend, publishes what it produces, restarts it when it fails."""

    def __init__(
        self,
        bus: BusClient,
        config: AppConfig,
        *,
        ring: FrameRingWriter | None,
        backend_factory: Callable[[], Backend],
        open_ring: Callable[[], FrameRingWriter | None] | None = None,
        on_status: Callable[[str, bool], None] = lambda text, degraded: None,
        stall_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.ring = ring
        self.open_ring = open_ring  # None: run without a ring rather than retry
        self._ring_tried_at = time.monotonic()
        self.backend_factory = backend_factory
        self.on_status = on_status
        self.stall_s = stall_s  # None: from the frame rate (stall_timeout)
        self.backend: Backend | None = None
        self.state: StateName = "starting"
        self.reason = ""
        self.first_attempt = asyncio.Event()
        self.hung = False
        self.published = 0
        self.status_text = ""

    # --- status -----------------------------------------------------------------------------

    def set_status(
        self, state: StateName, reason: str = "", fps: float = 0.0, size: tuple[int, int] = (0, 0)
    ) -> None:
        self.state, self.reason = state, reason
        cam = self.config.camera
        width, height = size
        msg = CameraStatus(
            state=state, backend=cam.backend, reason=reason[:4096], width=width, height=height, fps=fps
        )
        self.bus.publish_nowait("camera.status", msg)
        if state == "ok":
            self.status_text = f"streaming {width}x{height} at {fps:g} fps ({cam.backend})"
        elif state == "starting":
            self.status_text = f"starting the {cam.backend} camera"
        else:
            self.status_text = f"camera {state}: {reason}"
        self.on_status(self.status_text, state in ("fault", "absent"))

    @property
    def status_line(self) -> str:
        return self.state if not self.reason else f"{self.state}: {self.reason}"

    # --- methods ----------------------------------------------------------------------------

    async def keyframe(self, params: Empty) -> Ok:
        backend = self.backend
        if backend is None or self.state != "ok":
            return Ok(ok=False, detail=f"the camera is not streaming ({self.status_line})")
        if not backend.request_keyframe():
            return Ok(ok=False, detail="the camera is not streaming")
        return Ok()

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            started = time.monotonic()
            state, reason = await self._run_once()
            self.set_status(state, f"{reason}; retrying in {backoff:g} s")
            self.first_attempt.set()
            if self.hung:
                return  # _stop_backend asked the runtime to restart the whole daemon
            await asyncio.sleep(backoff)
            ran = time.monotonic() - started - backoff
            backoff = BACKOFF_INITIAL_S if ran >= HEALTHY_RUN_S else min(backoff * 2, BACKOFF_MAX_S)

    async def _run_once(self) -> tuple[StateName, str]:
        """Start the backend and publish until it fails; the state and reason to report."""
        self.set_status("starting")
        loop = asyncio.get_running_loop()
        try:
            backend = self.backend_factory()
        except Exception as exc:  # a bad config for this backend, a missing library...
            log.exception("cannot create the camera backend")
            return "fault", f"{type(exc).__name__}: {exc}"
        outlet = Outlet(loop, self.ring, request_keyframe=backend.request_keyframe)
        start = asyncio.ensure_future(asyncio.to_thread(backend.start, outlet))
        try:
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await asyncio.shield(start)
            except TimeoutError:
                return "fault", f"the camera did not start within {START_TIMEOUT_S:g} s"
            except CameraAbsent as exc:
                log.warning("no camera: %s", exc)
                return "absent", str(exc)
            except Exception as exc:
                # A CameraFault is expected and says it all; anything else gets its traceback.
                log.warning("camera failed to start: %s", exc, exc_info=not isinstance(exc, HardwareError))
                return "fault", str(exc) or type(exc).__name__
            self.backend = backend
            # The stall clock runs from here: a start that took seconds is not silence.
            outlet.streaming_started()
            self.set_status("ok", fps=backend.fps, size=backend.size)
            self.first_attempt.set()
            reason = await self._publish(outlet, backend, self.stall_s or stall_timeout(backend.fps))
            log.warning("camera stopped: %s", reason)
            return "fault", reason
        finally:
            self.backend = None
            outlet.close()
            if await self._settle_start(start):
                await self._stop_backend(backend)

    async def _settle_start(self, start: asyncio.Future[None]) -> bool:
        """Wait for a start still running (timed out, or shutdown); False if it never returns.

        stop() run beside a start that has not returned finds nothing to release yet, and the
        start then opens the camera behind our back: it streams into a closed outlet and holds
        the device, so every later start finds it busy. So stop only once start has returned.
        """
        if not start.done():
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.shield(start)
            except TimeoutError:
                # Its exception, if it ever ends with one, is of no interest to anyone.
                start.add_done_callback(lambda f: f.cancelled() or f.exception())
                log.error(
                    "the camera's start has not returned after %g s; restarting the daemon",
                    START_TIMEOUT_S + STOP_TIMEOUT_S,
                )
                self.hung = True
                return False
            except Exception:
                pass  # a failed start still gets its stop, which must cope with it
        return True

    async def _stop_backend(self, backend: Backend) -> None:
        stop = asyncio.ensure_future(asyncio.to_thread(backend.stop))
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.shield(stop)
        except TimeoutError:
            # A driver call that never returns leaves the camera in an unknown state that only
            # a new process clears; systemd (or the demo supervisor) restarts this daemon.
            log.error("the camera did not stop within %g s; restarting the daemon", STOP_TIMEOUT_S)
            self.hung = True
        except CameraStuck as exc:
            # The same, said by the backend: retrying in this process would find it busy.
            log.error("the camera could not be released (%s); restarting the daemon", exc)
            self.hung = True
        except Exception:
            log.exception("error while stopping the camera")

    def _retry_ring(self) -> FrameRingWriter | None:
        """The preview ring, if it was missing and can be made now (at most every RING_RETRY_S)."""
        now = time.monotonic()
        if self.ring is None and self.open_ring is not None and now - self._ring_tried_at >= RING_RETRY_S:
            self._ring_tried_at = now
            self.ring = self.open_ring()
        return self.ring

    async def _publish(self, outlet: Outlet, backend: Backend, stall_s: float) -> str:
        cam_ring = self.ring
        # An access unit must fit in one bus frame with its header; VBV keeps software-encoded
        # ones far below 4 MiB, but a hardware encoder has no such cap.
        max_unit = self.config.bus.max_frame_bytes - 64 * 1024
        gap = False
        while True:
            await outlet.wait(min(1.0, stall_s))
            if cam_ring is None and (cam_ring := self._retry_ring()) is not None:
                outlet.attach_ring(cam_ring)
            batch = outlet.take()
            for au in batch.units:
                if len(au.data) > max_unit:
                    log.warning("dropped a %d-byte access unit: over the bus frame limit", len(au.data))
                    gap = True
                    continue
                msg = H264AccessUnit(
                    pts=au.pts,
                    keyframe=au.keyframe,
                    width=au.width,
                    height=au.height,
                    capture_ts=au.capture_ts,
                )
                # Awaits only while the broker pushes back; meanwhile the outlet's bound applies.
                if not await self.bus.publish("camera.h264", msg, attachment=au.data):
                    gap = True  # the bus was down: this unit is lost for every subscriber
                    continue
                self.published += 1
                if gap:
                    # Subscribers missed units since the last IDR, so what they get now would
                    # decode to garbage until the next one: ask for it at once.
                    gap = False
                    if not au.keyframe:
                        backend.request_keyframe()
            if batch.preview is not None and cam_ring is not None:
                notice = FrameRingNotice(
                    ring=PREVIEW_RING,
                    frame_seq=batch.preview.seq,
                    width=cam_ring.layout.width,
                    height=cam_ring.layout.height,
                    capture_ts=batch.preview.capture_ts,
                    generation=cam_ring.layout.generation,
                )
                self.bus.publish_nowait("camera.preview", notice)
            if batch.fault is not None:
                return batch.fault
            silent = time.monotonic() - outlet.last_unit_at
            if silent > stall_s:
                return f"no frames from the camera for {silent:.1f} s"


def open_preview_ring(config: AppConfig) -> FrameRingWriter | None:
    cam = config.camera
    path = ring_path(PREVIEW_RING, config.paths.run_dir)
    try:
        return FrameRingWriter.create(path, cam.preview_width, cam.preview_height, PREVIEW_FORMAT, slots=4)
    except StateError as exc:
        # The screen loses its preview; remote video still works. Not a reason to stop.
        log.error("no preview ring: %s", exc)
        return None


async def main(rt: Runtime) -> None:
    bus = await rt.connect_bus()
    service = CameraService(
        bus,
        rt.config,
        ring=open_preview_ring(rt.config),
        backend_factory=lambda: make_backend(rt.config),
        open_ring=lambda: open_preview_ring(rt.config),
        on_status=lambda text, degraded: rt.status(text, degraded=degraded),
    )
    # Whichever ring the service ends up with (it may make one late) is closed at exit.
    rt.stack.callback(lambda: service.ring.close() if service.ring is not None else None)
    bus.serve("camera.keyframe", service.keyframe)

    async def supervise() -> None:
        await service.run()
        rt.stop(1)  # only reached when the camera hung: exit so the daemon is restarted clean

    rt.spawn(supervise(), "camera")
    # READY means the daemon is up and has tried the camera once, whatever came of it: a
    # kiosk without a camera is degraded, not down.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(START_TIMEOUT_S + STOP_TIMEOUT_S):
            await service.first_attempt.wait()
    rt.ready(service.status_text)
    if service.state in ("fault", "absent"):
        rt.status(service.status_text, degraded=True)
