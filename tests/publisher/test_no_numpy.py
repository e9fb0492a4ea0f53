"""numpy stays out of the publisher's process: it costs the daemon about 10 MB of RSS (issue 8's
memory budget), and aiortc and PyAV do not need it. The audio frames, the speaker's peak level
and the picture-in-picture letterbox are done with the standard library and PyAV's own planes.

The subprocess test runs the daemon's import and the code paths that used numpy in a fresh
interpreter. The other tests prove the numpy-free code gives what the numpy code gave: they
import numpy themselves (the test process may) and compare with the old computation."""

from __future__ import annotations

import array
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from appliance.bus.framering import FrameRingReader, ring_path
from appliance.bus.topics import FrameRingNotice
from appliance.publisher import remote_video
from appliance.publisher.microphone import FRAME_SAMPLES, SAMPLE_RATE, SimMicrophone, _frame
from appliance.publisher.remote_video import RING, RING_HEIGHT, RING_WIDTH, RemoteVideo, letterbox
from appliance.publisher.speaker import NullSpeaker

REPO = Path(__file__).resolve().parents[2]


def test_the_publisher_daemon_runs_without_numpy(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import av
        import appliance.publisher.daemon
        assert "numpy" not in sys.modules, "importing the daemon imported numpy"

        from appliance.publisher.microphone import SimMicrophone
        from appliance.publisher.remote_video import RemoteVideo, letterbox
        from appliance.publisher.speaker import NullSpeaker

        async def mic():
            m = SimMicrophone()
            await m.open()
            frame = await m.read()
            await m.close()
            return frame

        frame = asyncio.run(mic())
        speaker = NullSpeaker()
        speaker.play(frame)
        speaker.play(av.AudioFrame(format="fltp", layout="stereo", samples=480))
        letterbox(av.VideoFrame(64, 48, "yuv420p"))
        notices = []
        pip = RemoteVideo({str(tmp_path)!r}, notices.append)
        pip.offer("viewer-1", av.VideoFrame(64, 48, "yuv420p"))  # written to the ring
        assert notices, "the viewer's frame was not written to the ring"
        pip.close()
        assert "numpy" not in sys.modules, "a publisher code path imported numpy"
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- the microphone ---------------------------------------------------------------------------


def _numpy_pattern(tone: bool, frequency: float = 440.0, level: float = 0.1) -> np.ndarray:
    """The sim's pattern as the numpy code computed it."""
    t = np.arange(SAMPLE_RATE * SimMicrophone.PATTERN_S) / SAMPLE_RATE
    on = (t % SimMicrophone.PATTERN_S) < 0.5
    wave = np.sin(2 * math.pi * frequency * t) * int(level * 32767) * on if tone else np.zeros_like(t)
    return wave.astype(np.int16)


@pytest.mark.parametrize("tone", [True, False])
async def test_the_sim_microphone_sends_the_same_beep_as_before(tone: bool) -> None:
    expected = _numpy_pattern(tone)
    mic = SimMicrophone(tone=tone)
    mic._next = -1e9  # far behind: read() does not wait for the clock (and resets _next)
    mic._open = True
    got: list[np.ndarray] = []
    for _ in range(len(expected) // FRAME_SAMPLES + 3):  # past the loop point
        mic._next = -1e9
        frame = await mic.read()
        assert frame.format.name == "s16" and frame.layout.name == "mono"
        assert frame.samples == FRAME_SAMPLES and frame.sample_rate == SAMPLE_RATE
        got.append(frame.to_ndarray().reshape(-1))
    samples = np.concatenate(got)
    assert np.array_equal(samples[: len(expected)], expected)
    assert np.array_equal(samples[len(expected) :], expected[: len(samples) - len(expected)])


@pytest.mark.parametrize("count", [FRAME_SAMPLES, 1001, 1])
def test_a_frame_holds_exactly_the_samples_written(count: int) -> None:
    samples = array.array("h", ((i * 7919) % 65536 - 32768 for i in range(count)))
    frame = _frame(samples.tobytes(), 123)
    assert frame.samples == count and frame.pts == 123 and frame.sample_rate == SAMPLE_RATE
    assert frame.to_ndarray().reshape(-1).tolist() == samples.tolist()


def test_a_frame_refuses_bytes_that_are_not_whole_samples() -> None:
    with pytest.raises(ValueError, match="s16"):
        _frame(b"\x00\x01\x02", 0)


# -- the speaker's peak -----------------------------------------------------------------------


def _filled(fmt: str, layout: str, samples: int, values: np.ndarray, *, align: int = 1) -> av.AudioFrame:
    """A frame of `values` (one row per plane), its padding (if align pads it) loud garbage."""
    frame = av.AudioFrame(format=fmt, layout=layout, samples=samples, align=align)
    frame.sample_rate = SAMPLE_RATE
    rows = values.reshape(len(frame.planes), -1)
    for plane, row in zip(frame.planes, rows, strict=True):
        data = row.tobytes()
        assert plane.buffer_size >= len(data)
        # Loud garbage in the padding: the peak must not count it.
        junk = (np.full(plane.buffer_size, 0x7F, np.uint8)).tobytes()
        plane.update(data + junk[len(data) :])
    return frame


CASES = [
    ("s16", "mono", np.int16),
    ("s16", "stereo", np.int16),
    ("s16p", "stereo", np.int16),
    ("flt", "mono", np.float32),
    ("flt", "stereo", np.float32),
    ("fltp", "stereo", np.float32),
]


@pytest.mark.parametrize(("fmt", "layout", "dtype"), CASES)
@pytest.mark.parametrize("align", [1, 64])
def test_the_speaker_peak_is_the_loudest_real_sample(fmt: str, layout: str, dtype: type, align: int) -> None:
    channels = 2 if layout == "stereo" else 1
    samples = 1001
    rng = np.random.default_rng(8)
    if dtype is np.int16:
        values = (rng.uniform(-0.3, 0.3, samples * channels) * 32767).astype(np.int16)
        values[-1] = -20000  # the very last real sample is the loudest (the last plane's, if planar)
        expected = 20000 / 32768.0
    else:
        values = rng.uniform(-0.3, 0.3, samples * channels).astype(np.float32)
        values[-1] = np.float32(-0.75)
        expected = 0.75
    frame = _filled(fmt, layout, samples, values, align=align)
    # The numpy code's answer, for the record: the same.
    array_ = frame.to_ndarray()
    old = float(np.abs(array_).max()) / (32768.0 if dtype is np.int16 else 1.0)
    speaker = NullSpeaker()
    speaker.play(frame)
    assert speaker.peak == pytest.approx(expected) and speaker.peak == pytest.approx(old)
    assert speaker.frames == 1 and speaker.samples == samples


def test_the_speaker_peak_of_a_silent_and_an_empty_frame_is_zero() -> None:
    speaker = NullSpeaker()
    speaker.peak = 0.5
    speaker.play(av.AudioFrame(format="s16", layout="mono", samples=0))
    assert speaker.peak == 0.0
    speaker.peak = 0.5
    speaker.play(_filled("fltp", "stereo", 10, np.zeros(20, np.float32)))
    assert speaker.peak == 0.0


def test_a_full_scale_negative_s16_sample_is_a_peak_of_one() -> None:
    speaker = NullSpeaker()
    speaker.play(_filled("s16", "mono", 4, np.array([0, 1, -32768, 5], np.int16)))
    assert speaker.peak == 1.0


def test_a_sample_format_without_a_peak_keeps_the_last_peak() -> None:
    """As before: only s16 and float frames set the level (aiortc decodes to s16)."""
    speaker = NullSpeaker()
    speaker.peak = 0.25
    speaker.play(av.AudioFrame(format="s32", layout="mono", samples=8))
    assert speaker.peak == 0.25 and speaker.frames == 1


# -- the letterbox ----------------------------------------------------------------------------


def _numpy_letterbox(frame: av.VideoFrame, box_w: int = RING_WIDTH, box_h: int = RING_HEIGHT) -> np.ndarray:
    """The picture-in-picture as the numpy code made it."""
    w, h = remote_video.fit(frame.width, frame.height, box_w, box_h)
    image = frame.reformat(width=w, height=h, format="bgr24").to_ndarray()
    out = np.zeros((box_h, box_w, 3), np.uint8)
    y, x = (box_h - h) // 2, (box_w - w) // 2
    out[y : y + h, x : x + w] = image
    return out


def _picture(width: int, height: int, fmt: str = "rgb24") -> av.VideoFrame:
    rng = np.random.default_rng(width * 1000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    return frame if fmt == "rgb24" else frame.reformat(format=fmt)


@pytest.mark.parametrize(
    ("width", "height", "fmt"),
    [
        (640, 480, "yuv420p"),  # the box's own shape
        (1280, 720, "yuv420p"),  # wide: bars above and below
        (480, 640, "yuv420p"),  # tall: bars left and right
        (318, 333, "rgb24"),  # odd sizes; bgr24 rows of 3 * w bytes padded to the line size
        (64, 48, "rgb24"),  # smaller than the box: scaled up
        (2, 600, "rgb24"),  # a sliver
    ],
)
def test_the_letterbox_is_the_same_picture_as_before(width: int, height: int, fmt: str) -> None:
    frame = _picture(width, height, fmt)
    expected = _numpy_letterbox(frame)
    got = letterbox(frame)
    assert len(got) == RING_WIDTH * RING_HEIGHT * 3
    assert bytes(got) == expected.tobytes()


def test_the_letterbox_of_a_smaller_box() -> None:
    frame = _picture(200, 100)
    assert bytes(letterbox(frame, 64, 64)) == _numpy_letterbox(frame, 64, 64).tobytes()


def test_the_ring_holds_the_letterboxed_picture(tmp_path: Path) -> None:
    notices: list[FrameRingNotice] = []
    pip = RemoteVideo(str(tmp_path), notices.append, clock=lambda: 1000.0)
    assert pip.path == ring_path(RING, tmp_path)
    frame = _picture(1280, 720, "yuv420p")
    pip.offer("v1", frame)
    assert len(notices) == 1
    reader = FrameRingReader.open(tmp_path / RING)
    try:
        got = reader.latest()
        assert got is not None
        assert got.pixels.reshape(-1).tobytes() == _numpy_letterbox(frame).tobytes()
    finally:
        reader.close()
        pip.close()
