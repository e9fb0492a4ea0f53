"""The kiosk's microphone: FRAME_MS frames of 48 kHz mono s16, from ALSA or a simulation.

Backends (publisher.audio_backend):
- `alsa`: the capture device publisher.mic_device through PyAV (FFmpeg's alsa input). Reads
  block, so they run in a thread that hands frames to the event loop; the device paces them.
- `sim`: a soft 440 Hz beep, half a second in every two, paced by the monotonic clock, so a
  demo viewer hears that audio flows. `SimMicrophone(tone=False)` gives silence.

A microphone is opened only while someone listens (see audio.py): the kiosk does not capture
sound in a room nobody is watching.
"""

from __future__ import annotations

import abc
import array
import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from fractions import Fraction

import av

from appliance.errors import HardwareError

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
# 40 ms per frame, and so per Opus packet: twice WebRTC's usual 20 ms. Every packet costs the
# publisher a trip through aiortc's Python RTP path and a system call per viewer, and audio was
# half of the publisher's whole CPU at 20 ms (measured: 3 of 5 % of a core with one viewer);
# 40 ms nearly halves that for 20 ms more delay, little next to the viewer's jitter buffer.
FRAME_MS = 40
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
TIME_BASE = Fraction(1, SAMPLE_RATE)
_QUEUE_FRAMES = 12  # about half a second; a loop that stalls longer loses the oldest audio


class AudioDeviceError(HardwareError):
    """A microphone or speaker could not be opened or failed while running."""


class Microphone(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Start capturing; raise AudioDeviceError when the device cannot be opened."""

    @abc.abstractmethod
    async def read(self) -> av.AudioFrame:
        """The next FRAME_MS (s16, mono, 48 kHz, FRAME_SAMPLES samples, pts in samples)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop capturing; safe to call twice or after a failed open."""


def _frame(samples: bytes, pts: int) -> av.AudioFrame:
    """A mono s16 frame of `samples` (native-endian int16s, as FFmpeg's s16 is)."""
    # Written through the plane rather than AudioFrame.from_ndarray, which needs numpy: numpy
    # costs the publisher ~10 MB of RSS and nothing else in the daemon uses it.
    if len(samples) % 2:
        raise ValueError(f"{len(samples)} bytes is not a whole number of s16 samples")
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples) // 2)
    plane = frame.planes[0]
    # update() takes exactly the plane's size, which FFmpeg may round up past the samples:
    # the tail is padding that nothing reads (frame.samples bounds every reader).
    padding = plane.buffer_size - len(samples)
    plane.update(samples + bytes(padding) if padding else samples)
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


@functools.cache
def _pattern(tone: bool, frequency: float, level: float, seconds: int) -> bytes:
    """`seconds` of s16 samples: the tone for the first half second, then silence.

    Cached: every listener's microphone is a new SimMicrophone, and this is a Python loop
    (tens of milliseconds on a Pi) that must not stall the event loop each time."""
    samples = array.array("h", bytes(2 * SAMPLE_RATE * seconds))
    if tone:
        amplitude = int(level * 32767)
        for i in range(len(samples)):
            t = i / SAMPLE_RATE
            if t >= 0.5:
                break  # the rest is silence
            # As numpy computed it (a float64 sine times the amplitude, truncated towards
            # zero), so the beep is what it always was.
            samples[i] = int(math.sin(2 * math.pi * frequency * t) * amplitude)
    # FFmpeg's s16 and array's "h" are both native-endian: the bytes go in as they are.
    return samples.tobytes()


class SimMicrophone(Microphone):
    PATTERN_S = 2  # the beep repeats every 2 s: on for the first half second

    def __init__(self, tone: bool = True, *, frequency: float = 440.0, level: float = 0.1) -> None:
        self.tone = tone
        # The whole pattern once, so a read is a slice: the sim should cost what a real
        # microphone costs (next to nothing), not a sine per frame.
        self._pattern = _pattern(tone, frequency, level, self.PATTERN_S)
        assert len(self._pattern) % (FRAME_SAMPLES * 2) == 0  # a frame never straddles the loop point
        self._pts = 0
        self._next: float | None = None
        self._open = False

    async def open(self) -> None:
        self._open = True
        self._next = time.monotonic()

    async def read(self) -> av.AudioFrame:
        if not self._open or self._next is None:
            raise AudioDeviceError("the sim microphone is closed")
        # Absolute deadlines: a late wake-up is made up by the next frame, so the stream keeps
        # real time on average and the receiver's jitter buffer sees a steady frame rate.
        self._next += FRAME_SAMPLES / SAMPLE_RATE
        delay = self._next - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.2:
            self._next = time.monotonic()  # far behind (a suspended loop): do not burst
        start = self._pts * 2 % len(self._pattern)  # 2 bytes a sample
        frame = _frame(self._pattern[start : start + FRAME_SAMPLES * 2], self._pts)
        self._pts += FRAME_SAMPLES
        return frame

    async def close(self) -> None:
        self._open = False


class AlsaMicrophone(Microphone):
    """ALSA capture through PyAV; a reader thread resamples to 48 kHz mono FRAME_MS frames."""

    def __init__(self, device: str = "default") -> None:
        self.device = device
        self._queue: asyncio.Queue[av.AudioFrame | BaseException] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.dropped = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            container = await asyncio.to_thread(
                av.open,
                self.device,
                format="alsa",
                options={"sample_rate": str(SAMPLE_RATE), "channels": "1"},
            )
        except (av.FFmpegError, OSError) as exc:
            raise AudioDeviceError(f"cannot open the microphone {self.device!r}: {exc}") from None
        self._queue = asyncio.Queue(_QUEUE_FRAMES)
        self._stop.clear()
        self._thread = threading.Thread(target=self._capture, args=(loop, container), name="mic", daemon=True)
        self._thread.start()

    def _capture(self, loop: asyncio.AbstractEventLoop, container: av.container.InputContainer) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=FRAME_SAMPLES)
        pts = 0
        try:
            for frame in container.decode(audio=0):
                if self._stop.is_set():
                    return
                for out in resampler.resample(frame):
                    out.pts = pts
                    out.time_base = TIME_BASE
                    pts += out.samples
                    loop.call_soon_threadsafe(self._put, out)
            raise AudioDeviceError(f"the microphone {self.device!r} stopped sending")
        except BaseException as exc:
            if not self._stop.is_set():
                err = exc if isinstance(exc, AudioDeviceError) else AudioDeviceError(f"microphone: {exc}")
                with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting
                    loop.call_soon_threadsafe(self._put, err)
        finally:
            # Closed here, by the thread that reads it: FFmpeg contexts are not thread-safe, and
            # ALSA returns a period every few milliseconds, so the stop flag is seen promptly.
            container.close()

    def _put(self, item: av.AudioFrame | BaseException) -> None:
        queue = self._queue
        if queue is None:
            return
        if queue.full():
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait(item)

    async def read(self) -> av.AudioFrame:
        if self._queue is None:
            raise AudioDeviceError("the microphone is closed")
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)
            self._thread = None
        self._queue = None


def make_microphone(backend: str, device: str = "default") -> Microphone:
    if backend == "alsa":
        return AlsaMicrophone(device)
    return SimMicrophone()
