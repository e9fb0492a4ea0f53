"""Audio parts off the device: the sim microphone, Opus once for every listener, and what a
missing ALSA device does (it is reported and retried; nothing else stops)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import av
import numpy as np
import pytest

from appliance.publisher import audio as audio_mod
from appliance.publisher.audio import OpusFeed
from appliance.publisher.microphone import FRAME_SAMPLES, SAMPLE_RATE, AlsaMicrophone, SimMicrophone
from appliance.publisher.speaker import AlsaSpeaker, NullSpeaker

from .helpers import wait_until


async def test_the_sim_microphone_keeps_real_time_with_a_beep() -> None:
    mic = SimMicrophone()
    await mic.open()
    start = time.monotonic()
    frames = [await mic.read() for _ in range(25)]  # one second
    elapsed = time.monotonic() - start
    await mic.close()
    assert 0.9 < elapsed < 1.3
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(25)]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert samples.dtype == np.int16 and len(samples) == SAMPLE_RATE
    # A beep for the first half second, then silence.
    assert np.abs(samples[: SAMPLE_RATE // 2]).max() > 3000 and np.abs(samples[SAMPLE_RATE // 2 :]).max() == 0


async def test_opus_is_encoded_once_for_every_listener() -> None:
    feed = OpusFeed(SimMicrophone)
    tracks = [feed.track() for _ in range(3)]
    assert not feed.capturing  # nobody listens yet
    tracks[0].listen(True)
    tracks[1].listen(True)
    got: list[list[av.Packet]] = [[], []]
    for _ in range(13):
        got[0].append(await tracks[0].recv())
        got[1].append(await tracks[1].recv())
    assert all(a is b for a, b in zip(*got, strict=True))  # the same packets, not copies
    assert feed.packets <= 14  # one encode per frame, whatever the number of listeners
    pts = [p.pts for p in got[0]]
    assert all(b - a == FRAME_SAMPLES for a, b in itertools.pairwise(pts))
    assert not tracks[2]._queue  # the muted viewer gets nothing
    # Decoded, it is the sim's 440 Hz beep.
    decoder = av.CodecContext.create("libopus", "r")
    mono = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    decoded = np.concatenate(
        [m.to_ndarray().reshape(-1) for p in got[0] for f in decoder.decode(p) for m in mono.resample(f)]
    )
    spectrum = np.abs(np.fft.rfft(decoded[: SAMPLE_RATE // 4].astype(float)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (SAMPLE_RATE // 4)
    assert abs(peak_hz - 440) < 10
    for t in tracks[:2]:
        t.listen(False)
    await wait_until(lambda: not feed.capturing, "the microphone closed")
    await feed.aclose()


async def test_a_missing_alsa_microphone_is_reported_and_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_mod, "RETRY_INITIAL_S", 0.05)
    opened: list[AlsaMicrophone] = []

    def make() -> AlsaMicrophone:
        mic = AlsaMicrophone("hw:CARD=NoSuchCard,DEV=0")
        opened.append(mic)
        return mic

    feed = OpusFeed(make)
    track = feed.track()
    track.listen(True)
    await wait_until(lambda: len(opened) >= 3, "retries")
    assert feed.fault is not None and "NoSuchCard" in feed.fault
    assert feed.capturing  # still trying while someone listens
    track.listen(False)
    await wait_until(lambda: not feed.capturing, "giving up when nobody listens")
    await feed.aclose()


async def test_a_missing_alsa_speaker_is_a_fault_not_an_exception() -> None:
    speaker = AlsaSpeaker("hw:CARD=NoSuchCard,DEV=0")
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    speaker.play(frame)
    await wait_until(lambda: speaker.fault is not None, "the speaker's fault")
    assert "NoSuchCard" in (speaker.fault or "")
    speaker.close()


def test_the_null_speaker_counts_what_it_is_given() -> None:
    speaker = NullSpeaker()
    samples = (np.sin(np.arange(1920) / 10) * 16000).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    speaker.play(frame)
    assert speaker.frames == 1 and speaker.samples == 960 and 0.45 < speaker.peak < 0.5


async def test_timestamps_move_on_with_the_clock_between_sessions() -> None:
    feed = OpusFeed(SimMicrophone)
    track = feed.track()
    track.listen(True)
    first = await track.recv()
    track.listen(False)
    await wait_until(lambda: not feed.capturing, "closed")
    await asyncio.sleep(0.3)
    track.listen(True)
    again = await track.recv()
    # A pause is a gap in RTP time, never a step back (a receiver would take it for reordering).
    assert again.pts - first.pts >= 0.3 * SAMPLE_RATE
    await feed.aclose()


async def test_a_listener_arriving_as_the_last_one_leaves_still_gets_audio() -> None:
    """One viewer mutes (or leaves) and another unmutes before the capture task has run again:
    the task is cancelled but not yet done. The new listener must not be left without sound
    (the microphone closed, nothing capturing) for the rest of its call."""
    feed = OpusFeed(SimMicrophone)
    a, b = feed.track(), feed.track()
    a.listen(True)
    await a.recv()
    a.listen(False)  # the capture task is cancelled...
    b.listen(True)  # ...and, before it has run, somebody else listens
    async with asyncio.timeout(5):
        packet = await b.recv()
    assert packet is not None and feed.capturing
    await feed.aclose()


async def test_a_missing_alsa_speaker_is_tried_once_per_talk_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """A talk burst is 25 frames a second: a speaker that cannot be opened must not be opened
    again (a thread and a device probe) for every one of them, only on the next burst."""
    opens: list[str] = []
    real_open = av.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opens.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    speaker = AlsaSpeaker("hw:CARD=NoSuchCard,DEV=0")
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    speaker.play(frame)
    await wait_until(lambda: speaker.fault is not None, "the speaker's fault")
    for _ in range(20):
        speaker.play(frame)
        await asyncio.sleep(0.01)
    assert len(opens) == 1
    speaker.idle()  # the burst ends; the next one tries the device again
    speaker.play(frame)
    await wait_until(lambda: len(opens) == 2, "a new attempt on the next burst")
    speaker.close()
