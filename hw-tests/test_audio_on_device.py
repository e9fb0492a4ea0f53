"""On a device: the publisher's ALSA microphone and speaker (publisher.audio_backend = "alsa").

- The microphone delivers 40 ms frames of 48 kHz mono s16 at the real-time rate, through the
  same OpusFeed the publisher uses, as Opus packets with timestamps one frame apart.
- The speaker plays a viewer's talk audio without a fault.
- Both together: a 1 kHz tone played on the speaker is heard by the microphone (they share the
  kiosk's enclosure), measured against the room's level at 1 kHz with the speaker silent.

Devices: publisher.mic_device and publisher.speaker_device from /etc/appliance/appliance.toml
(or $APPLIANCE_CONFIG), "default" otherwise. Each test skips with the reason when there is no
Raspberry Pi or no ALSA capture or playback device.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from appliance.config import load_config
from appliance.errors import ConfigError
from appliance.publisher.audio import OpusFeed
from appliance.publisher.microphone import FRAME_SAMPLES, SAMPLE_RATE, AlsaMicrophone
from appliance.publisher.speaker import AlsaSpeaker

pytestmark = pytest.mark.hw

ASOUND = Path("/proc/asound")


def _alsa_devices(kind: str) -> list[str]:
    """'capture' or 'playback' PCM devices the kernel knows, from /proc/asound/pcm."""
    try:
        lines = (ASOUND / "pcm").read_text().splitlines()
    except OSError:
        return []
    return [line.split(":")[0] for line in lines if f"{kind} " in line]


def _devices() -> tuple[str, str]:
    try:
        pub = load_config().publisher
    except ConfigError:
        return "default", "default"
    return pub.mic_device, pub.speaker_device


@pytest.fixture
def microphone(raspberry_pi: str) -> str:
    if not _alsa_devices("capture"):
        pytest.skip("no ALSA capture device (/proc/asound/pcm lists none): plug in the kiosk's microphone")
    return _devices()[0]


@pytest.fixture
def speaker(raspberry_pi: str) -> str:
    if not _alsa_devices("playback"):
        pytest.skip("no ALSA playback device (/proc/asound/pcm lists none): connect the kiosk's speaker")
    return _devices()[1]


def _tone(seconds: float, frequency: float, level: float = 0.3) -> list[av.AudioFrame]:
    frames = []
    n = int(seconds * SAMPLE_RATE) // FRAME_SAMPLES
    for i in range(n):
        t = (i * FRAME_SAMPLES + np.arange(FRAME_SAMPLES)) / SAMPLE_RATE
        samples = (np.sin(2 * np.pi * frequency * t) * level * 32767).astype(np.int16)
        # Stereo s16 at 48 kHz, as aiortc's Opus decoder hands a viewer's audio to the speaker.
        frame = av.AudioFrame.from_ndarray(
            np.repeat(samples, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i * FRAME_SAMPLES
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frames.append(frame)
    return frames


def _band_level(samples: np.ndarray, frequency: float) -> float:
    """Magnitude at `frequency` (a Hann-windowed DFT bin), for any length of mono samples."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    band = (freqs > frequency - 30) & (freqs < frequency + 30)
    return float(spectrum[band].max())


async def _capture(device: str, seconds: float) -> np.ndarray:
    mic = AlsaMicrophone(device)
    await mic.open()
    try:
        chunks = []
        for _ in range(int(seconds * SAMPLE_RATE) // FRAME_SAMPLES):
            async with asyncio.timeout(2.0):
                frame = await mic.read()
            assert (frame.samples, frame.sample_rate, frame.layout.name) == (
                FRAME_SAMPLES,
                SAMPLE_RATE,
                "mono",
            )
            chunks.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(chunks)
    finally:
        await mic.close()


async def test_the_microphone_feeds_opus_in_real_time(microphone: str) -> None:
    feed = OpusFeed(lambda: AlsaMicrophone(microphone))
    track = feed.track()
    track.listen(True)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5.0):
            first = await track.recv()
        start = loop.time()
        pts = [first.pts]
        for _ in range(50):  # two seconds
            async with asyncio.timeout(2.0):
                packet = await track.recv()
            pts.append(packet.pts)
        elapsed = loop.time() - start
    finally:
        track.stop()
        await feed.aclose()
    assert feed.fault is None
    assert all(b - a == FRAME_SAMPLES for a, b in itertools.pairwise(pts))
    # 50 frames of 40 ms: two seconds of audio in about two seconds (the device sets the pace).
    assert 1.6 < elapsed < 2.6, f"50 frames took {elapsed:.2f} s"


async def test_the_speaker_plays_talk_audio(speaker: str) -> None:
    out = AlsaSpeaker(speaker)
    try:
        for frame in _tone(1.0, 440.0):
            out.play(frame)
            await asyncio.sleep(FRAME_SAMPLES / SAMPLE_RATE)
        await asyncio.sleep(0.3)
        assert out.fault is None, out.fault
        assert out.frames == 25 and out.peak > 0.25
    finally:
        out.idle()
        out.close()


async def test_the_microphone_hears_the_speaker(microphone: str, speaker: str) -> None:
    quiet = await _capture(microphone, 1.0)
    out = AlsaSpeaker(speaker)

    async def play() -> None:
        for frame in _tone(2.0, 1000.0):
            out.play(frame)
            await asyncio.sleep(FRAME_SAMPLES / SAMPLE_RATE)

    player = asyncio.ensure_future(play())
    try:
        await asyncio.sleep(0.5)  # the device opened and the tone is playing
        loud = await _capture(microphone, 1.0)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await player
        out.idle()
        out.close()
    assert out.fault is None, out.fault
    ratio = _band_level(loud, 1000.0) / max(_band_level(quiet, 1000.0), 1.0)
    assert ratio > 10, f"the 1 kHz tone is only {ratio:.1f}x the room's level at the microphone"
