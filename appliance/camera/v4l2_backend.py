"""camera.backend = "v4l2": a USB webcam (or any V4L2 capture device) through PyAV, libx264.

A capture thread reads frames from camera.device, scales and converts them with swscale (in
C, off the GIL) to 4:2:0 at the capture size and to B, G, R at the preview size, turns and
mirrors both as configured, hands the preview to the ring and queues the picture for the
encoder thread. The webcam is asked for the configured size and rate; one that refuses them
is opened at its own default and scaled, so an odd webcam still gives a picture.

capture_ts is the time the frame reached this process (a webcam's own timestamps are not on
a clock we can rely on across drivers); that is late by the driver's and USB's latency,
typically a few ms, at most a frame.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from typing import Any

import av

from appliance.camera import transform
from appliance.camera.base import (
    Backend,
    CameraAbsent,
    CameraFault,
    CameraStuck,
    FrameSink,
    RawFrame,
    StreamSettings,
)
from appliance.camera.encoder import EncodeWorker, SoftwareH264Encoder

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 5.0
CAPTURE_JOIN_S = 3.0  # within the daemon's STOP_TIMEOUT_S, so a stuck read is reported, not timed out


def check_device(path: str) -> None:
    """Raise CameraAbsent for a device that is not there, CameraFault for one we cannot use."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CameraAbsent(
            f"{path} does not exist: is the webcam plugged in? (v4l2-ctl --list-devices)"
        ) from None
    except OSError as exc:
        raise CameraFault(f"cannot stat {path}: {exc.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise CameraFault(f"{path} is not a character device: camera.device must name a V4L2 device")
    if not os.access(path, os.R_OK | os.W_OK):
        raise CameraFault(f"no access to {path}: add the appliance user to group video")


def _open_error(path: str, exc: Exception) -> CameraAbsent | CameraFault:
    code = getattr(exc, "errno", None)
    if code == errno.ENODEV and os.path.exists(path):
        # FFmpeg's answer for a node that exists but cannot capture video: most often the
        # metadata node a UVC webcam has beside its capture node. Plugged in, wrong node.
        return CameraFault(
            f"{path} is not a video capture device: set camera.device to the webcam's capture "
            "node (v4l2-ctl --list-devices lists it first)"
        )
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return CameraAbsent(f"{path}: {os.strerror(code)} (unplugged?)")
    return CameraFault(f"{path}: cannot open: {exc}")


class V4L2Backend(Backend):
    name = "v4l2"

    def __init__(self, settings: StreamSettings) -> None:
        super().__init__(settings)
        self.worker: EncodeWorker | None = None
        self._container: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._release_lock = threading.Lock()
        self._fps = float(settings.fps)
        self.frames = 0

    @property
    def fps(self) -> float:
        return self._fps

    def _open(self) -> Any:
        s = self.settings
        cap_w, cap_h = s.orientation.capture_size(*s.encode_size)
        path = s.device
        wanted = {"video_size": f"{cap_w}x{cap_h}", "framerate": str(s.fps)}
        try:
            return av.open(path, format="video4linux2", options=wanted, timeout=OPEN_TIMEOUT_S)
        except av.FFmpegError as exc:
            if getattr(exc, "errno", None) in (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EACCES):
                raise _open_error(path, exc) from None
            log.warning("%s refuses %s: %s; trying its default mode", path, wanted, exc)
        try:
            return av.open(path, format="video4linux2", timeout=OPEN_TIMEOUT_S)
        except av.FFmpegError as exc:
            raise _open_error(path, exc) from None

    def start(self, sink: FrameSink) -> None:
        s = self.settings
        check_device(s.device)
        container = self._open()
        self._container = container
        try:
            stream = container.streams.video[0]
        except IndexError:
            self._release()
            raise CameraFault(f"{s.device} has no video stream") from None
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        if rate:
            self._fps = min(float(s.fps), float(rate))
        width, height = s.encode_size
        encoder = SoftwareH264Encoder(width, height, self._fps, s.bitrate, s.keyframe_interval_s)
        orient = s.orientation
        self.worker = EncodeWorker(
            encoder,
            sink,
            prepare=lambda raw: RawFrame(transform.apply_i420(raw.image, orient), raw.fmt, raw.capture_ts),
        )
        self.worker.start()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._capture, args=(container, sink), name="camera-v4l2", daemon=True
        )
        self._thread.start()
        log.info(
            "v4l2 camera %s: %dx%d %s at %g fps, encoding %dx%d",
            s.device,
            stream.codec_context.width,
            stream.codec_context.height,
            stream.codec_context.pix_fmt or stream.codec_context.name,
            self._fps,
            width,
            height,
        )

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # A read returns within a frame interval, or with an error if the device went away.
            thread.join(CAPTURE_JOIN_S)
        if self.worker is not None:
            self.worker.stop()
        if thread is not None and thread.is_alive():
            # A webcam that stalled without going away: the capture thread sits in a read
            # (av_read_frame, without the GIL) that may never return. Closing the container
            # under it would free the demuxer it is using; the thread closes it if the read
            # ever returns, and meanwhile the device stays busy for any new open in this process.
            raise CameraStuck(f"{self.settings.device}: a read from the camera did not return")
        self._release()

    def _release(self) -> None:
        """Close the device once, from whichever of stop() and the capture thread ends last."""
        with self._release_lock:
            container, self._container = self._container, None
        if container is not None:
            container.close()

    def request_keyframe(self) -> bool:
        if self.worker is None or self._thread is None:
            return False
        self.worker.request_keyframe()
        return True

    def _capture(self, container: Any, sink: FrameSink) -> None:
        s = self.settings
        assert self.worker is not None
        orient = s.orientation
        cap_w, cap_h = orient.capture_size(*s.encode_size)
        prev_w, prev_h = s.preview_capture_size
        # A webcam paces itself, but one that delivers faster than asked is thinned to the rate
        # (a frame kept at least 0.8 of a period after the last: a steady 30 fps webcam asked for
        # 15 gives every other frame despite jitter; one that slows down keeps more of its frames).
        min_gap = 0.8 / s.fps
        last = 0.0
        try:
            for frame in container.decode(video=0):
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                if now - last < min_gap:
                    continue
                last = now
                self.frames += 1
                preview = frame.to_ndarray(width=prev_w, height=prev_h, format="bgr24")
                sink.preview(transform.apply(preview, orient), now)
                picture = frame.to_ndarray(width=cap_w, height=cap_h, format="yuv420p")
                self.worker.submit(RawFrame(picture, "yuv420p", now))
            if not self._stopping.is_set():
                sink.fault(f"{s.device}: the stream ended")
        except Exception as exc:
            if self._stopping.is_set():
                return
            log.warning("v4l2 capture failed: %s", exc)
            gone = getattr(exc, "errno", None) in (errno.ENODEV, errno.ENXIO, errno.ENOENT)
            sink.fault(
                f"{s.device}: {'the device went away (unplugged?)' if gone else f'capture failed: {exc}'}"
            )
        finally:
            if self._stopping.is_set():
                self._release()  # stop() may have given up waiting for us and left it open
