"""The picamera2 backend's start() and stop() against stand-ins that fail the way picamera2 does.

A camera that is busy or refuses to start is retried by the daemon every 30 s for as long as
that lasts (weeks, unattended): nothing may build up across those restarts.
"""

from __future__ import annotations

import os
import threading

import pytest

from appliance.camera.base import CameraFault
from appliance.camera.picamera2_backend import Picamera2Backend
from appliance.camera.transform import Orientation

from . import fake_picamera2
from .helpers import CollectingSink, settings

RESTARTS = 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_camera_that_will_not_start_leaves_no_encoder_running(monkeypatch: pytest.MonkeyPatch) -> None:
    cam = fake_picamera2.install(monkeypatch)
    cam.fail_start = True
    fds, threads = open_fds(), threading.active_count()
    for _ in range(RESTARTS):
        backend = Picamera2Backend(settings())
        with pytest.raises(CameraFault, match="Device or resource busy"):
            backend.start(CollectingSink())
        backend.stop()
    # picamera2 started the encoder (codec device open, poll thread running) before the camera
    # failed: stop() must stop it, or each retry keeps a /dev/video11 context and a thread.
    assert all(not enc._running for inst in cam.instances for enc in inst._encoders)
    assert threading.active_count() == threads
    assert open_fds() == fds


def test_a_busy_camera_leaks_nothing_across_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    cam = fake_picamera2.install(monkeypatch)
    cam.busy = True
    fds = open_fds()
    for _ in range(RESTARTS):
        backend = Picamera2Backend(settings())
        with pytest.raises(CameraFault, match="cannot open the camera"):
            backend.start(CollectingSink())
        backend.stop()
    # picamera2's failed __init__ leaves its notification pipe open and itself registered with
    # the camera manager; at one retry every 30 s that is the fd limit within hours.
    assert open_fds() == fds
    assert cam._cm.cameras == {}
    # And the camera, once free, opens and records as usual.
    cam.busy = False
    backend = Picamera2Backend(settings())
    backend.start(CollectingSink())
    try:
        assert backend.request_keyframe()
    finally:
        backend.stop()
    assert open_fds() == fds and cam._cm.cameras == {}


@pytest.mark.parametrize(
    ("size", "preview", "rotation"),
    [
        ((640, 480), (321, 241), 0),  # an odd preview size: picamera2 wants even streams
        ((640, 480), (321, 241), 180),
        ((320, 240), (640, 480), 0),  # a preview larger than the picture: lores may not exceed main
        ((161, 121), (81, 61), 90),  # odd everything, turned in software
    ],
)
def test_any_valid_preview_size_gives_a_configuration_picamera2_accepts(
    monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], preview: tuple[int, int], rotation: int
) -> None:
    cam = fake_picamera2.install(monkeypatch)
    backend = Picamera2Backend(settings(*size, preview=preview, orientation=Orientation(rotation)))
    backend.start(CollectingSink())
    try:
        config = cam.instances[-1].camera_config
        lores_w, lores_h = config["lores"]["size"]
        main_w, main_h = config["main"]["size"]
        assert lores_w % 2 == 0 and lores_h % 2 == 0
        assert lores_w <= main_w and lores_h <= main_h
        assert backend.size == (size[0] - size[0] % 2, size[1] - size[1] % 2)
    finally:
        backend.stop()
