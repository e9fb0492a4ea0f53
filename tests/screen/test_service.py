"""ScreenService without a bus: redraws only on a change, sound cues once per result, live
config reload, frames from a real shared-memory ring."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.bus.client import Received
from appliance.bus.framering import FrameRingWriter, ring_path
from appliance.bus.topics import (
    FrameRingNotice,
    Health,
    Message,
    ScreeningState,
    ThermalFrame,
    ThermalStatus,
)
from appliance.camera import PREVIEW_FORMAT, PREVIEW_RING
from appliance.config import AppConfig, parse_config, replace
from appliance.screen.daemon import ScreenService
from appliance.screen.feeds import RingFeed
from appliance.screen.render import offscreen
from appliance.screen.sounds import CUES, RATE, Sounds, samples
from appliance.screen.view import BUS_GRACE_S

from .helpers import thermal_pixels


def make_config(run_dir: Path, **screen: object) -> AppConfig:
    return parse_config({"paths": {"state_dir": str(run_dir), "run_dir": str(run_dir)}, "screen": screen})


class Presented:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def rx(topic: str, msg: Message) -> Received:
    return Received(topic, 1, time.monotonic(), msg)


def service(run_dir: Path, *, sounds: bool = False) -> tuple[ScreenService, Presented]:
    presented = Presented()
    svc = ScreenService(make_config(run_dir, sounds=sounds), offscreen((800, 480)), presented, Sounds(sounds))
    return svc, presented


def refresh(svc: ScreenService) -> bool:
    return svc.refresh(time.time(), time.monotonic())


def test_nothing_is_redrawn_without_a_change(tmp_path: Path) -> None:
    svc, presented = service(tmp_path)
    assert refresh(svc) and presented.count == 1
    assert not refresh(svc) and not refresh(svc)
    idle = rx("screening.state", ScreeningState(state="idle"))
    assert svc.on_message(idle)
    assert refresh(svc) and presented.count == 2
    # The same state again (a retained value on reconnect: the same envelope, its time the
    # original publication's) is no change at all.
    assert not svc.on_message(Received(idle.topic, idle.seq, idle.ts, ScreeningState(state="idle")))
    assert not refresh(svc) and presented.count == 2
    # Published again (a later envelope) it is news, as its age counts; the view is the same.
    assert svc.on_message(rx("screening.state", ScreeningState(state="idle")))
    assert not refresh(svc) and presented.count == 2
    # A new thermal frame is: the overlay moves. The words are not drawn again.
    static = svc.renderer.static_draws
    frame = ThermalFrame(pixels=thermal_pixels(), thermistor=24.0, rate_hz=10.0, frame_seq=1)
    assert svc.on_message(rx("thermal.frame", frame))
    assert refresh(svc) and presented.count == 3
    assert svc.renderer.static_draws == static
    assert not refresh(svc)
    assert svc.draws == presented.count == 3


def test_unknown_and_foreign_messages_change_nothing(tmp_path: Path) -> None:
    svc, _presented = service(tmp_path)
    refresh(svc)
    assert not svc.on_message(
        rx("screening.state", ThermalFrame(pixels=[20.0] * 64, thermistor=20, rate_hz=1, frame_seq=1))
    )
    assert not refresh(svc)


def test_result_cue_plays_once_per_result(tmp_path: Path) -> None:
    svc, _ = service(tmp_path, sounds=True)
    assert svc.sounds.available  # SDL's dummy audio driver
    for state in (
        ScreeningState(state="measuring", progress=0.5),
        ScreeningState(state="result", result="elevated", estimate_c=38.5),
    ):
        svc.on_message(rx("screening.state", state))
        refresh(svc)
    refresh(svc)
    svc.on_message(
        rx("thermal.frame", ThermalFrame(pixels=thermal_pixels(), thermistor=24, rate_hz=10, frame_seq=2))
    )
    refresh(svc)  # a redraw on the result screen: no second cue
    assert svc.sounds.played == ["elevated"]
    svc.reload(replace(svc.config, screen={"sounds": False}))
    svc.on_message(rx("screening.state", ScreeningState(state="result", result="normal", estimate_c=36.5)))
    refresh(svc)
    assert svc.sounds.played == ["elevated"]


def test_back_from_unavailable_to_the_same_result_plays_no_second_cue(tmp_path: Path) -> None:
    link = {"up": True}
    svc = ScreenService(
        make_config(tmp_path, sounds=True),
        offscreen((800, 480)),
        Presented(),
        Sounds(True),
        bus_connected=lambda: link["up"],
    )
    assert svc.sounds.available  # SDL's dummy audio driver
    t = time.monotonic()  # the clock the messages arrive on; refreshes get times from it
    svc.on_message(rx("thermal.status", ThermalStatus(state="ok")))
    svc.on_message(rx("health.screening", Health(daemon="screening", state="ready", pid=1, started_ts=1.0)))
    normal = ScreeningState(state="result", result="normal", estimate_c=36.6)
    svc.on_message(rx("screening.state", normal))
    svc.refresh(time.time(), t + 0.1)
    assert svc.view is not None and svc.view.kind == "normal"
    assert svc.sounds.played == ["normal"]

    # The link is lost past the grace period, then comes back; the same result is still held.
    link["up"] = False
    svc.refresh(time.time(), t + 0.2)
    svc.refresh(time.time(), t + 0.3 + BUS_GRACE_S)
    assert svc.view.kind == "unavailable"
    link["up"] = True
    svc.on_message(rx("screening.state", normal))  # republished on reconnect
    svc.refresh(time.time(), t + 0.4 + BUS_GRACE_S)
    assert svc.view.kind == "normal"
    assert svc.sounds.played == ["normal"], "the person heard this verdict already"

    # Lost again, and back to a new verdict of the same kind (another person): it is heard.
    link["up"] = False
    svc.refresh(time.time(), t + 0.5 + BUS_GRACE_S)
    svc.refresh(time.time(), t + 0.6 + 2 * BUS_GRACE_S)
    assert svc.view.kind == "unavailable"
    link["up"] = True
    svc.on_message(rx("screening.state", ScreeningState(state="result", result="normal", estimate_c=36.8)))
    svc.refresh(time.time(), t + 0.7 + 2 * BUS_GRACE_S)
    assert svc.view.kind == "normal"
    assert svc.sounds.played == ["normal", "normal"]

    # Without "unavailable" between them, a result of the same kind is one screen: no cue.
    svc.on_message(rx("screening.state", ScreeningState(state="result", result="normal", estimate_c=36.9)))
    svc.refresh(time.time(), t + 0.8 + 2 * BUS_GRACE_S)
    assert svc.sounds.played == ["normal", "normal"]


def test_reload_changes_language_and_units_live(tmp_path: Path) -> None:
    svc, _ = service(tmp_path)
    svc.on_message(rx("screening.state", ScreeningState(state="result", result="normal", estimate_c=37.0)))
    refresh(svc)
    assert svc.report is not None and svc.report.text_of("reading") == "37.0 °C"
    svc.reload(replace(svc.config, screen={"language": "de"}, screening={"units": "F"}))
    assert refresh(svc)
    assert svc.report.text_of("reading") == "98.6 °F"
    assert svc.report.text_of("title") == "Temperatur normal"


def test_camera_frames_come_from_the_ring_the_notice_names(tmp_path: Path) -> None:
    svc, _ = service(tmp_path)
    svc.on_message(rx("screening.state", ScreeningState(state="idle")))
    path = ring_path(PREVIEW_RING, tmp_path)
    writer = FrameRingWriter.create(path, 320, 240, PREVIEW_FORMAT)
    try:
        bgr = np.zeros((240, 320, 3), np.uint8)
        bgr[..., 2] = 220  # R, in the ring's B, G, R byte order
        seq = writer.write(bgr, 1.0)
        notice = FrameRingNotice(
            ring=PREVIEW_RING,
            frame_seq=seq,
            width=320,
            height=240,
            capture_ts=1.0,
            generation=writer.layout.generation,
        )
        assert svc.on_message(rx("camera.preview", notice))
        assert refresh(svc)
        assert svc.report is not None and "camera" in svc.report.regions
        x, y, _w, _h = svc.report.regions["camera"]
        c = svc.target.get_at((x + 5, y + 5))
        assert (c.r, c.g, c.b) == (220, 0, 0)
        # The same notice again: no new frame, no redraw.
        assert not svc.on_message(rx("camera.preview", notice))
        assert not refresh(svc)
    finally:
        writer.close()


def test_ring_feed_follows_a_restarted_writer_and_survives_a_missing_ring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = RingFeed(tmp_path, "camera preview")
    notice = FrameRingNotice(ring=PREVIEW_RING, frame_seq=1, width=4, height=2, capture_ts=0.0)
    with caplog.at_level(logging.WARNING):
        assert not feed.on_notice(notice)
        assert not feed.on_notice(notice)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1, "logged once"
    assert "no such file" in caplog.records[0].message
    path = ring_path(PREVIEW_RING, tmp_path)
    first = FrameRingWriter.create(path, 4, 2, "BGR888")
    seq = first.write(np.full((2, 4, 3), 10, np.uint8), 0.0)
    assert feed.on_notice(
        FrameRingNotice(
            ring=PREVIEW_RING,
            frame_seq=seq,
            width=4,
            height=2,
            capture_ts=0.0,
            generation=first.layout.generation,
        )
    )
    assert feed.latest is not None and feed.latest[0, 0].tolist() == [10, 10, 10]
    # The camera daemon restarts: a new ring at the same path, seqs from 1 again.
    second = FrameRingWriter.create(path, 4, 2, "BGR888")
    seq2 = second.write(np.full((2, 4, 3), 99, np.uint8), 0.0)
    assert seq2 == seq == 1
    assert feed.on_notice(
        FrameRingNotice(
            ring=PREVIEW_RING,
            frame_seq=seq2,
            width=4,
            height=2,
            capture_ts=0.0,
            generation=second.layout.generation,
        )
    )
    assert feed.latest[0, 0].tolist() == [99, 99, 99]
    first.close()
    second.close()
    feed.close()


def test_bad_ring_names_are_refused_quietly(tmp_path: Path) -> None:
    feed = RingFeed(tmp_path, "staff video")
    assert not feed.on_notice(
        FrameRingNotice(ring="../etc/passwd", frame_seq=1, width=4, height=2, capture_ts=0.0)
    )
    assert feed.errors == 1


# --- sounds ---------------------------------------------------------------------------------


def test_cues_are_distinct_bounded_and_click_free() -> None:
    seen = set()
    for cue in CUES:
        s = samples(cue)
        assert s.dtype == np.float32 and np.abs(s).max() <= 0.5
        assert abs(float(s[0])) < 0.01 and abs(float(s[-1])) < 0.01
        assert 0.1 * RATE < len(s) < 1.5 * RATE
        seen.add(s.tobytes())
    assert len(seen) == len(CUES)
    # Normal rises, elevated falls: told apart by direction, not only pitch.
    assert CUES["normal"][0][0] < CUES["normal"][-1][0]
    assert CUES["elevated"][0][0] > CUES["elevated"][-1][0]


def test_sounds_off_in_config_never_open_the_mixer() -> None:
    sounds = Sounds(False)
    assert sounds.available is None and not sounds.play("normal")


def test_no_audio_device_is_not_an_error() -> None:
    # A fresh process: SDL picks its audio driver once per process.
    script = textwrap.dedent(
        """
        import logging, os
        os.environ["SDL_AUDIODRIVER"] = "no-such-driver"
        logging.basicConfig(level=logging.WARNING)
        from appliance.screen.sounds import Sounds
        s = Sounds(True)
        assert s.available is False, s.available
        assert s.play("elevated") is False
        s.set_enabled(True)
        assert s.play("normal") is False
        s.close()
        print("silent-ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "silent-ok" in out.stdout
    assert "no sound: cannot open the audio device" in out.stderr
