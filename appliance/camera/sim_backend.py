"""camera.backend = "sim": the demo scenario on video, stamped for latency measurement.

A capture thread paces itself at camera.fps on the monotonic clock. Each tick it asks the
shared scene clock (appliance.sim.clock) where the scenario is, so it shows the same moment
the thermal sim is rendering in its own process; paints that moment; turns and mirrors it as
configured; hands a small copy to the preview ring; stamps the frame counter and the wall
clock into the top rows; and queues it for the encoder thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from appliance.camera import stamp, transform
from appliance.camera.base import (
    Backend,
    CameraFault,
    FrameClock,
    FrameSink,
    RawFrame,
    StreamSettings,
)
from appliance.camera.encoder import EncodeWorker, SoftwareH264Encoder
from appliance.camera.render import SceneRenderer
from appliance.errors import ConfigError
from appliance.sim.clock import load_sim_scenario, scene_time
from appliance.sim.scenario import CAMERA_HFOV_DEG, Scenario

log = logging.getLogger(__name__)


class SimBackend(Backend):
    name = "sim"

    def __init__(self, settings: StreamSettings, scenario: str = "demo", seed: int = 1) -> None:
        super().__init__(settings)
        self.scenario_spec = scenario
        self.seed = seed
        self.counter = 0
        self.skipped = 0
        self.worker: EncodeWorker | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, sink: FrameSink) -> None:
        s = self.settings
        try:
            scenario = load_sim_scenario(self.scenario_spec)
        except ConfigError as exc:
            raise CameraFault(f"sim scenario: {exc}") from None
        width, height = s.encode_size
        if stamp.stamp_height(width) > height:
            raise CameraFault(f"{width}x{height} is too small for the sim's frame stamp")
        encoder = SoftwareH264Encoder(width, height, s.fps, s.bitrate, s.keyframe_interval_s)
        self.worker = EncodeWorker(encoder, sink)
        self.worker.start()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._capture, args=(scenario, sink), name="camera-sim", daemon=True
        )
        self._thread.start()
        log.info("sim camera: scenario %s, %dx%d at %d fps", scenario.name, width, height, s.fps)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self.worker is not None:
            self.worker.stop()

    def request_keyframe(self) -> bool:
        if self.worker is None or self._thread is None:
            return False
        self.worker.request_keyframe()
        return True

    def _capture(self, scenario: Scenario, sink: FrameSink) -> None:
        s = self.settings
        assert self.worker is not None
        cap_w, cap_h = s.orientation.capture_size(*s.encode_size)
        renderer = SceneRenderer(cap_w, cap_h, seed=scenario.seed + self.seed)
        # Keep the camera's horizontal field of view; the vertical one follows the picture's shape.
        vfov = math.degrees(2 * math.atan(math.tan(math.radians(CAMERA_HFOV_DEG) / 2) * cap_h / cap_w))
        clock = FrameClock(s.fps, time.monotonic())
        try:
            while not self._stopping.is_set():
                wait = clock.wait_time(time.monotonic())
                if wait > 0 and self._stopping.wait(wait):
                    return
                now = time.monotonic()
                wall = time.time()
                self.skipped += clock.tick(now)
                regions = scenario.camera_view(scene_time(scenario, now), CAMERA_HFOV_DEG, vfov)
                picture = transform.apply(renderer.render(regions), s.orientation)
                sink.preview(transform.resize_nearest(picture, s.preview_width, s.preview_height), now)
                self.counter = (self.counter + 1) & 0xFFFFFFFF
                stamp.draw_stamp(picture, stamp.Stamp(self.counter, stamp.wall_ms(wall)))
                self.worker.submit(RawFrame(picture, "bgr24", now))
        except Exception as exc:
            log.exception("sim camera failed")
            sink.fault(f"sim camera failed: {type(exc).__name__}: {exc}")
