"""camera.backend = "picamera2": a Raspberry Pi camera through libcamera.

The main stream (YUV420 at the capture size) goes straight from the ISP to the H.264 encoder
as a dmabuf: no copy and no CPU on a Pi 4, whose VideoCore encoder picamera2 drives through
V4L2 (/dev/video11). A Pi 5 has no H.264 block; there `picamera2.encoders.H264Encoder` is
picamera2's LibavH264Encoder (libx264) and we tune that one instead. Either way:

- Constrained Baseline at level 3.1 (when the picture fits), SPS and PPS repeated before every
  IDR, an IDR every camera.keyframe_interval_s (iperiod in frames at the fixed frame rate).
- Access units leave through `AccessUnitOutput`, a picamera2 Output: outputframe() runs in the
  encoder's thread and hands each unit to the daemon's Outlet (call_soon_threadsafe inside).
- `camera.keyframe` calls the encoder's force_key_frame(): on the V4L2 encoder it sets
  V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME before the next buffer is queued, on the libav one it
  marks the next frame's pict_type I (forced-idr makes that an IDR).
- The lores stream (the preview size, made even and no larger than main as picamera2 demands)
  is copied out in picamera2's post_callback and handed to a preview thread, which converts it
  (a Pi 4's lores is YUV420 only; a Pi 5 gives B, G, R directly), scales it to the preview size
  and writes it to the ring.
- hflip, vflip and rotation 180 are done by the ISP (libcamera Transform), for free. The ISP
  cannot transpose, so for rotation 90 or 270 the main stream is copied out and turned and
  encoded in software (libx264, like the v4l2 backend): it works, at a CPU cost; mount the
  camera upright or upside down where you can.

picamera2 and libcamera exist only on Raspberry Pi OS (python3-picamera2 from apt): they are
imported in start(), and their absence is reported as an absent camera, not a crash.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.camera import h264, transform
from appliance.camera.base import (
    AccessUnit,
    Backend,
    CameraAbsent,
    CameraFault,
    FrameSink,
    LatestQueue,
    RawFrame,
    StreamSettings,
)
from appliance.camera.encoder import EncodeWorker, SoftwareH264Encoder

log = logging.getLogger(__name__)


class AccessUnitOutput:
    """The logic of our picamera2 Output (the class itself is built in `_output_class`).

    Kept free of picamera2 so it can be tested here: timestamps to capture_ts and pts,
    keyframe from the bitstream, SPS/PPS before IDRs.
    """

    def __init__(self, sink: FrameSink, width: int, height: int, first_timestamp_us: Any) -> None:
        self.sink = sink
        self.width = width
        self.height = height
        # picamera2 passes timestamps in µs since the encoder's first frame; the first frame's
        # own SensorTimestamp (µs on CLOCK_MONOTONIC, as V4L2 buffers are) is the encoder's
        # `firsttimestamp`. A callable, read late: it is set only once frames flow.
        self.first_timestamp_us = first_timestamp_us
        self.headers = h264.ParameterSetCache()
        self._fallback_base: float | None = None
        self._last_pts: int | None = None

    def capture_ts(self, timestamp_us: int | None) -> float:
        first = self.first_timestamp_us()
        if timestamp_us is not None and first is not None:
            return (first + timestamp_us) / 1e6
        now = time.monotonic()
        if timestamp_us is None:
            return now
        # No sensor base known (an older picamera2): anchor the relative times on our clock.
        if self._fallback_base is None:
            self._fallback_base = now - timestamp_us / 1e6
        return self._fallback_base + timestamp_us / 1e6

    def frame(self, data: bytes | memoryview, timestamp_us: int | None) -> AccessUnit:
        capture_ts = self.capture_ts(timestamp_us)
        au, idr = self.headers.ensure(bytes(data))
        pts = h264.to_pts(capture_ts)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return AccessUnit(au, pts, idr, capture_ts, self.width, self.height)


def _output_class(output_base: Any) -> Any:
    class KioskOutput(output_base):
        def __init__(self, logic: AccessUnitOutput) -> None:
            super().__init__()
            self.logic = logic

        def outputframe(
            self,
            frame: bytes | None,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio or frame is None:
                return
            try:
                unit = self.logic.frame(frame, timestamp)
            except Exception as exc:
                # This runs in picamera2's encoder thread, between taking an encoded buffer and
                # giving it back: an exception would end that thread silently, leave the encoder
                # short of buffers, and the daemon would only see silence. Report it instead.
                log.exception("H.264 output failed")
                self.logic.sink.fault(f"H.264 output failed: {type(exc).__name__}: {exc}")
                return
            self.logic.sink.access_unit(unit)

    return KioskOutput


def _v4l2_encoder(h264_cls: Any, v4l2_base: Any, videodev2: Any, level_idc: int, on_headers: Any) -> Any:
    """The Pi 4's hardware encoder, with the profile and level the WebRTC side expects.

    picamera2's H264Encoder._start builds its V4L2 controls and then calls
    V4L2Encoder._start, which applies them; our class sits between the two in the MRO, so
    it sees the list and sets Constrained Baseline and the level on it, whatever picamera2's
    version supports as arguments.
    """
    profile_ctrl = (
        videodev2.V4L2_CID_MPEG_VIDEO_H264_PROFILE,
        videodev2.V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE,
    )
    level_ctrl = (
        videodev2.V4L2_CID_MPEG_VIDEO_H264_LEVEL,
        getattr(videodev2, f"V4L2_MPEG_VIDEO_H264_LEVEL_{level_idc // 10}_{level_idc % 10}"),
    )

    class _KioskControls(v4l2_base):
        _controls: list[tuple[int, int]]

        def _start(self) -> None:
            ids = {profile_ctrl[0], level_ctrl[0]}
            self._controls = [c for c in self._controls if c[0] not in ids] + [profile_ctrl, level_ctrl]
            super()._start()

        def _check_for_picture(self, buf: bytes) -> bool:
            # picamera2 drops headers-only buffers; keep their SPS/PPS for the next IDR.
            has_picture = bool(super()._check_for_picture(buf))
            if not has_picture:
                try:
                    on_headers(buf)
                except Exception:  # picamera2's encoder thread, as in outputframe: never raise
                    log.exception("could not keep the SPS/PPS of a headers-only buffer")
            return has_picture

    class KioskH264Encoder(h264_cls, _KioskControls):
        pass

    return KioskH264Encoder


def _libav_encoder(libav_cls: Any, level_idc: int, bitrate: int) -> Any:
    """A Pi 5's software encoder (picamera2's libx264 wrapper), tuned for latency like ours."""

    class KioskLibavH264Encoder(libav_cls):
        def _start(self) -> None:
            super()._start()
            import av

            cc = self._stream.codec_context
            # picamera2 asks for frame threads, which under libx264 override zerolatency's
            # sliced threads and delay every frame by the thread count; slices do not.
            cc.thread_type = av.codec.context.ThreadType.SLICE
            options = dict(cc.options)
            options.update(
                {
                    "level": f"{level_idc // 10}.{level_idc % 10}",
                    "forced-idr": "1",
                    "maxrate": str(bitrate),
                    "bufsize": str(bitrate // 2),
                    "x264-params": "repeat-headers=1:scenecut=0:bframes=0:rc-lookahead=0",
                }
            )
            # The codec opens on the first frame, so options set now still apply.
            cc.options = options

    return KioskLibavH264Encoder


def lores_request_size(preview: tuple[int, int], main: tuple[int, int]) -> tuple[int, int]:
    """The lores stream to ask for: the preview size made even and no larger than main.

    picamera2 refuses odd stream sizes and a lores stream larger than main (check_stream_config,
    check_camera_config), while the config allows both for the preview; the preview thread
    scales whatever lores gives to the preview size, so a size that differs a little is fine.
    """
    width = min(preview[0] + preview[0] % 2, main[0] - main[0] % 2)
    height = min(preview[1] + preview[1] % 2, main[1] - main[1] % 2)
    return max(2, width), max(2, height)


def _open_picamera2(picamera2_cls: Any) -> Any:
    """A new Picamera2, or CameraFault; a failed open leaves nothing behind.

    picamera2's __init__ opens a notification pipe and registers the instance with its camera
    manager before it opens the camera, and when that fails (the camera busy in another
    process, or gone since the listing) undoes neither: close() returns early for a camera
    that never opened. Retried every 30 s for as long as the camera stays busy, that is a file
    descriptor per attempt until the process runs out. So the instance is made in two steps,
    to still hold it when __init__ fails, and what it made is released here.
    """
    picam2 = picamera2_cls.__new__(picamera2_cls)
    try:
        picam2.__init__()
    except Exception as exc:
        _discard_half_open(picam2)
        raise CameraFault(f"cannot open the camera: {exc}") from None
    return picam2


def _discard_half_open(picam2: Any) -> None:
    # Unregistered first: the manager's listener thread writes to notifyme_w for a camera it knows.
    manager = getattr(type(picam2), "_cm", None)
    cameras = getattr(manager, "cameras", None)
    if manager is not None and isinstance(cameras, dict):
        for index in [i for i, cam in cameras.items() if cam is picam2]:
            try:
                manager.cleanup(index)  # which also ends its listener thread when none is left
            except Exception:
                log.exception("could not unregister a camera that failed to open")
    reader = getattr(picam2, "notifymeread", None)
    fds = [getattr(picam2, "notifyme_w", None)]
    if reader is not None:
        with contextlib.suppress(OSError):
            reader.close()  # the file object that owns notifyme_r
    else:
        fds.append(getattr(picam2, "notifyme_r", None))
    for fd in fds:
        if isinstance(fd, int):
            with contextlib.suppress(OSError):
                os.close(fd)


class Picamera2Backend(Backend):
    name = "picamera2"

    def __init__(self, settings: StreamSettings) -> None:
        super().__init__(settings)
        self._picam2: Any = None
        self._encoder: Any = None
        self._worker: EncodeWorker | None = None
        self._recording = False
        self._preview_queue: LatestQueue[tuple[npt.NDArray[np.uint8], float]] = LatestQueue(1)
        self._preview_thread: threading.Thread | None = None
        self._size = settings.encode_size
        self._lores_yuv = True
        self._lores_size = settings.preview_capture_size
        self._software_turn = False

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def start(self, sink: FrameSink) -> None:
        try:
            from picamera2 import MappedArray, Picamera2
            from picamera2.encoders import H264Encoder as PlatformH264Encoder
            from picamera2.encoders.libav_h264_encoder import LibavH264Encoder
            from picamera2.encoders.v4l2_encoder import V4L2Encoder
            from picamera2.outputs import Output
            from picamera2.platform import Platform, get_platform

            # videodev2 and libcamera come with picamera2 on Raspberry Pi OS and have no stubs.
            videodev2 = importlib.import_module("videodev2")
            transform_cls = importlib.import_module("libcamera").Transform
        except ImportError as exc:
            raise CameraAbsent(
                f"picamera2 is not available ({exc}): install python3-picamera2 with apt and create "
                "the venv with --system-site-packages"
            ) from None
        if not Picamera2.global_camera_info():
            raise CameraAbsent(
                "libcamera finds no camera: check the ribbon cable (contacts, both ends) and "
                "camera_auto_detect=1 in /boot/firmware/config.txt, then reboot"
            )
        s = self.settings
        orient = s.orientation
        flips = transform.sensor_flips(orient)
        self._software_turn = flips is None
        hflip, vflip = flips if flips is not None else (orient.hflip, orient.vflip)
        cap_w, cap_h = orient.capture_size(*s.encode_size)
        vc4 = get_platform() == Platform.VC4
        # A Pi 4's ISP gives its second (lores) output in YUV420 only; a Pi 5's in any format.
        self._lores_yuv = vc4
        frame_us = round(1_000_000 / s.fps)
        picam2 = _open_picamera2(Picamera2)
        self._picam2 = picam2
        try:
            config = picam2.create_video_configuration(
                main={"size": (cap_w, cap_h), "format": "YUV420"},
                lores={
                    "size": lores_request_size(s.preview_capture_size, (cap_w, cap_h)),
                    "format": "YUV420" if vc4 else "RGB888",
                },
                # With a software turn, the mirrors are done after it, in `transform.apply`.
                transform=transform_cls() if self._software_turn else transform_cls(hflip=hflip, vflip=vflip),
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                encode="main",
            )
            picam2.configure(config)
            main_cfg = picam2.stream_configuration("main")
            lores_cfg = picam2.stream_configuration("lores")
        except Exception as exc:
            raise CameraFault(f"the camera refuses {cap_w}x{cap_h} at {s.fps} fps: {exc}") from None
        main_w, main_h = main_cfg["size"]
        self._lores_size = (int(lores_cfg["size"][0]), int(lores_cfg["size"][1]))  # libcamera may align it
        out_w, out_h = (main_h, main_w) if self._software_turn and orient.transposes else (main_w, main_h)
        self._size = (out_w, out_h)
        if (out_w, out_h) != s.encode_size:
            log.warning("the camera gives %dx%d instead of %dx%d", out_w, out_h, *s.encode_size)
        level = h264.level_for(out_w, out_h, s.fps, s.bitrate)

        self._preview_thread = threading.Thread(
            target=self._preview_loop, args=(sink,), name="camera-preview", daemon=True
        )
        self._preview_thread.start()

        def post_callback(request: Any) -> None:
            # picamera2's camera thread: copy out and return; converting waits in our threads.
            try:
                ts = request.get_metadata().get("SensorTimestamp")
                capture_ts = ts / 1e9 if ts else time.monotonic()
                with MappedArray(request, "lores") as m:
                    self._preview_queue.put((m.array.copy(), capture_ts))
                if self._worker is not None:
                    with MappedArray(request, "main") as m:
                        self._worker.submit(RawFrame(m.array.copy(), "yuv420p", capture_ts))
            except Exception as exc:
                sink.fault(f"picamera2 callback failed: {type(exc).__name__}: {exc}")

        picam2.post_callback = post_callback
        try:
            if self._software_turn:
                encoder = SoftwareH264Encoder(out_w, out_h, s.fps, s.bitrate, s.keyframe_interval_s)
                main_size = (main_w, main_h)
                self._worker = EncodeWorker(
                    encoder, sink, prepare=lambda raw: self._turn_main(raw, main_size)
                )
                self._worker.start()
                picam2.start()
                log.info("picamera2: %dx%d, turned %d° in software (libx264)", out_w, out_h, orient.rotation)
            else:
                logic = AccessUnitOutput(
                    sink, out_w, out_h, lambda: getattr(self._encoder, "firsttimestamp", None)
                )
                if PlatformH264Encoder is LibavH264Encoder:
                    cls = _libav_encoder(LibavH264Encoder, level, s.bitrate)
                    self._encoder = cls(
                        bitrate=s.bitrate,
                        repeat=True,
                        iperiod=s.keyframe_period,
                        framerate=s.fps,
                        profile="constrained baseline",
                    )
                    kind = "libx264 (no hardware encoder on this Pi)"
                else:
                    cls = _v4l2_encoder(
                        PlatformH264Encoder, V4L2Encoder, videodev2, level, logic.headers.remember
                    )
                    self._encoder = cls(
                        bitrate=s.bitrate, repeat=True, iperiod=s.keyframe_period, framerate=s.fps
                    )
                    kind = "hardware H.264"
                output = _output_class(Output)(logic)
                # Set before: start_recording starts the encoder (the codec device opened, its
                # poll thread running) and only then the camera; when the camera fails, only
                # stop_recording() stops that encoder again, and picam2.stop() or close() do not.
                self._recording = True
                picam2.start_recording(self._encoder, output)
                log.info("picamera2: %dx%d at %d fps, %s, level %d", out_w, out_h, s.fps, kind, level)
        except Exception as exc:
            raise CameraFault(f"the camera or its encoder failed to start: {exc}") from None

    def _turn_main(self, raw: RawFrame, main_size: tuple[int, int]) -> RawFrame:
        packed = transform.i420_unstride(raw.image, *main_size)
        return RawFrame(transform.apply_i420(packed, self.settings.orientation), raw.fmt, raw.capture_ts)

    def _preview_loop(self, sink: FrameSink) -> None:
        s = self.settings
        lores_w, lores_h = self._lores_size
        # The ISP already mirrored lores unless the turn is ours: then all of it is done here.
        orient = s.orientation if self._software_turn else transform.Orientation()
        while True:
            item = self._preview_queue.get(timeout=1.0)
            if item is None:
                if self._preview_queue.closed:
                    return
                continue
            array, capture_ts = item
            try:
                if self._lores_yuv:
                    image = transform.i420_to_bgr(transform.i420_unstride(array, lores_w, lores_h))
                else:
                    image = array  # "RGB888": B, G, R bytes, the ring's format already
                image = transform.apply(image, orient)
                sink.preview(transform.resize_nearest(image, s.preview_width, s.preview_height), capture_ts)
            except Exception as exc:
                log.exception("preview conversion failed")
                sink.fault(f"preview conversion failed: {type(exc).__name__}: {exc}")
                return

    def stop(self) -> None:
        picam2 = self._picam2
        self._picam2 = None
        try:
            if picam2 is not None:
                picam2.post_callback = None
                if self._recording:
                    picam2.stop_recording()
                else:
                    picam2.stop()
        finally:
            self._recording = False
            self._preview_queue.close()
            if self._preview_thread is not None:
                self._preview_thread.join(2.0)
                self._preview_thread = None
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
            if picam2 is not None:
                picam2.close()
            self._encoder = None

    def request_keyframe(self) -> bool:
        if self._worker is not None:
            self._worker.request_keyframe()
            return True
        force = getattr(self._encoder, "force_key_frame", None)
        if force is None:
            if self._encoder is not None:
                log.warning("this picamera2 cannot force a keyframe (force_key_frame needs 0.3.2x or later)")
            return False
        # picamera2 counts requests and makes one IDR per request, frame after frame; a burst of
        # requests (viewers joining together) needs only one, so ask only if none is pending.
        requested = getattr(self._encoder, "_key_frames_requested", 0)
        generated = getattr(self._encoder, "_key_frames_generated", 0)
        if requested <= generated:
            force()
        return True
