"""The kiosk's speaker: a viewer's push-to-talk audio, decoded by aiortc, played out.

Backends (publisher.audio_backend):
- `alsa`: the playback device publisher.speaker_device through PyAV (FFmpeg's alsa output),
  written from a thread so a slow device never blocks the event loop;
- `sim`: `NullSpeaker`, a sink that plays nothing and keeps count (frames, samples, peak
  level), so tests and the demo can see that talk audio arrived.

`play()` never blocks and never raises: the queue in front of the device is short (a quarter
of a second) and drops the oldest audio, because late speech is worse than a gap. A device
that fails is reported once through `fault` and reopened on the next talk burst.
"""

from __future__ import annotations

import abc
import array
import contextlib
import logging
import queue
import threading

import av

from appliance.publisher.microphone import SAMPLE_RATE, AudioDeviceError

log = logging.getLogger(__name__)

_QUEUE_FRAMES = 12  # about 240 ms of 20 ms frames

# Sample formats with a level: the array typecode of one sample, and full scale. aiortc decodes
# to s16; the float formats are there for a backend or test that hands those in.
_LEVEL_FORMATS: dict[str, tuple[str, float]] = {
    "s16": ("h", 32768.0),
    "s16p": ("h", 32768.0),
    "flt": ("f", 1.0),
    "fltp": ("f", 1.0),
    "dbl": ("d", 1.0),
    "dblp": ("d", 1.0),
}


def peak(frame: av.AudioFrame) -> float | None:
    """The loudest sample of every channel, 0..1 of full scale; None for a format without one.

    Read from the planes with `array`, not frame.to_ndarray(): numpy costs the publisher ~10 MB
    of RSS, for one number per frame."""
    level = _LEVEL_FORMATS.get(frame.format.name)
    if level is None:
        return None
    typecode, full_scale = level
    channels = 1 if frame.format.is_planar else len(frame.layout.channels)
    loudest = 0.0
    for plane in frame.planes:
        values = array.array(typecode)
        data = memoryview(plane).cast("B")
        # A plane may be padded past its samples (FFmpeg aligns buffers): only the frame's
        # samples are sound, the rest is whatever the decoder left there.
        size = min(frame.samples * channels * values.itemsize, len(data))
        values.frombytes(data[: size - size % values.itemsize])
        if values:
            # -min: the most negative s16 (-32768) is full scale too, and a Python int, unlike
            # an int16, does not wrap when negated.
            loudest = max(loudest, float(max(values)), -float(min(values)))
    return loudest / full_scale


class Speaker(abc.ABC):
    def __init__(self) -> None:
        self.frames = 0
        self.samples = 0
        self.peak = 0.0  # of the last frame, 0..1
        self.fault: str | None = None

    def play(self, frame: av.AudioFrame) -> None:
        """Queue a decoded frame (any format, rate and layout) for playback."""
        self.frames += 1
        self.samples += frame.samples
        level = peak(frame)
        if level is not None:  # other formats leave the last level, as they always did
            self.peak = level
        self._play(frame)

    @abc.abstractmethod
    def _play(self, frame: av.AudioFrame) -> None: ...

    def idle(self) -> None:  # noqa: B027 - a hook: a backend may release the device between bursts
        """Nobody is talking now."""

    def close(self) -> None:  # noqa: B027 - a hook: only backends holding a device close it
        """Release the device."""


class NullSpeaker(Speaker):
    def _play(self, frame: av.AudioFrame) -> None:
        pass


class AlsaSpeaker(Speaker):
    """ALSA playback through PyAV, opened on the first frame of a talk burst."""

    def __init__(self, device: str = "default") -> None:
        super().__init__()
        self.device = device
        self._queue: queue.Queue[av.AudioFrame | None] = queue.Queue(_QUEUE_FRAMES)
        self._thread: threading.Thread | None = None
        self.dropped = 0
        # The device failed during this talk burst: its other frames are dropped rather than
        # each starting a writer thread that probes the device again (25 a second).
        self._burst_failed = False

    def _play(self, frame: av.AudioFrame) -> None:
        if self._burst_failed:
            self.dropped += 1
            return
        if self._thread is None or not self._thread.is_alive():
            self._drain()  # a stop marker left for a writer that had already ended
            self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1
            try:
                self._queue.get_nowait()
                self._queue.put_nowait(frame)
            except (queue.Empty, queue.Full):
                pass

    def idle(self) -> None:
        # Ends the writer thread, which closes the device: between talk bursts the speaker
        # is free (and an underrun on an open device would click).
        self._burst_failed = False  # the next burst tries the device again
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)

    def _run(self) -> None:
        try:
            out = av.open(self.device, mode="w", format="alsa")
        except (av.FFmpegError, OSError) as exc:
            self._fail(f"cannot open the speaker {self.device!r}: {exc}")
            self._drain()
            return
        try:
            stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="stereo")
            resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
            while True:
                try:
                    frame = self._queue.get(timeout=2.0)
                except queue.Empty:
                    return
                if frame is None:
                    return
                for converted in resampler.resample(frame):
                    converted.pts = None
                    for packet in stream.encode(converted):
                        out.mux(packet)
                        # Working only once audio has been written: ALSA may accept the open
                        # and fail the first write (a card that is gone).
                        self.fault = None
        except (av.FFmpegError, OSError, AudioDeviceError) as exc:
            self._fail(f"speaker {self.device!r} failed: {exc}")
        finally:
            with contextlib.suppress(av.FFmpegError, OSError):
                out.close()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _fail(self, reason: str) -> None:
        self._burst_failed = True
        if self.fault != reason:
            log.warning("%s", reason)
        self.fault = reason

    def close(self) -> None:
        self.idle()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None


def make_speaker(backend: str, device: str = "default") -> Speaker:
    if backend == "alsa":
        return AlsaSpeaker(device)
    return NullSpeaker()
