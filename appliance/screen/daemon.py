"""`appliance run screen`: the status screen, driven by the bus.

    screening.state, health.screening, thermal.*, camera.*, pairing.status, setup.code, call.*
        --> ScreenService.on_message (Inputs) --> refresh(): compose -> View
                                                      |  same as the last one drawn: nothing
                                                      +-- else: Renderer.render, flip, sound cue

Redraws happen only when the view changes: a new state, a new frame seq, a countdown that
ticked. Bursts are coalesced to at most MAX_FPS redraws a second. A slow tick (TICK_S) lets
countdowns move and stale frames drop out while nothing arrives, and lets the screen notice
that the screening daemon went quiet or the bus link went down (each tick tells the view model
whether the bus is connected): the view model then replaces the retained screening state with
"screening unavailable" (see view.py). A lost link is forgiven for view.BUS_GRACE_S; the tick,
much shorter, is what shows "unavailable" when that ends with nothing arriving. A return from
"unavailable" to the verdict shown before it (the same screening state) plays no second cue.

Config changes to what the screen shows (screen.language, screen.sounds,
screen.hide_elevated_reading, screening.units) apply live: the config file is watched.
The display driver and size need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pygame

from appliance.bus.client import Received, Subscription
from appliance.bus.topics import FrameRingNotice, ScreeningState
from appliance.config import AppConfig, config_path, load_config
from appliance.errors import ApplianceError
from appliance.runtime import Runtime
from appliance.screen.display import Display
from appliance.screen.feeds import RingFeed
from appliance.screen.model import TOPICS, Inputs
from appliance.screen.render import Frames, Renderer, RenderReport
from appliance.screen.sounds import Sounds
from appliance.screen.view import DisplaySettings, ScreenKind, View, compose, sound_for

log = logging.getLogger(__name__)

MAX_FPS = 30.0
TICK_S = 0.5
CONFIG_POLL_S = 2.0
FRAME_TOPICS = ("camera.preview", "call.remote_video")


class ScreenService:
    """The daemon's core, without the bus: messages in, redraws out."""

    def __init__(
        self,
        config: AppConfig,
        target: pygame.Surface,
        present: Callable[[], None],
        sounds: Sounds,
        bus_connected: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.settings = DisplaySettings.from_config(config)
        self.target = target
        self.present = present
        self.sounds = sounds
        # Asked on every refresh: a lost link says nothing on the bus, by definition.
        self.bus_connected = bus_connected
        self.renderer = Renderer(target.get_size())
        self.inputs = Inputs()
        self.camera = RingFeed(config.paths.run_dir, "camera preview")
        self.remote = RingFeed(config.paths.run_dir, "staff video")
        self.view: View | None = None
        # The last screen drawn other than "unavailable", with the screening state it showed:
        # coming back to it after "unavailable" (a lost link or heartbeat that came back) is
        # not a new verdict, and the person heard its cue already.
        self._last_shown: tuple[ScreenKind, ScreeningState | None] | None = None
        self.report: RenderReport | None = None
        self.draws = 0

    def on_message(self, rx: Received) -> bool:
        """Take one bus message; True when a redraw may be due."""
        now = time.monotonic()
        msg = rx.msg
        if isinstance(msg, FrameRingNotice):
            feed = self.camera if rx.topic == "camera.preview" else self.remote
            if not feed.on_notice(msg):
                return False
            if feed is self.camera:
                self.inputs.note_camera(now)
            else:
                self.inputs.note_remote(now)
            return True
        # rx.ts: when it was published (the publisher's monotonic clock, the same as ours), so
        # a state the broker retained long ago is seen as old, not as news.
        return self.inputs.apply(rx.topic, msg, now, rx.ts)

    def reload(self, config: AppConfig) -> None:
        self.config = config
        self.settings = DisplaySettings.from_config(config)
        self.sounds.set_enabled(config.screen.sounds)

    def refresh(self, wall_now: float, mono_now: float) -> bool:
        """Draw if the view changed; True when it did."""
        if self.bus_connected is not None:
            self.inputs.note_bus(self.bus_connected(), mono_now)
        view = compose(self.inputs, self.settings, wall_now, mono_now)
        if view == self.view:
            return False
        previous = self.view.kind if self.view is not None else None
        shown = (view.kind, self.inputs.screening)
        if previous == "unavailable" and shown == self._last_shown:
            previous = view.kind  # back to the same verdict: for sound_for, never left
        frames = Frames(
            camera=self.camera.latest, thermal=self.inputs.thermal_pixels, remote=self.remote.latest
        )
        self.report = self.renderer.render(view, frames, self.target)
        self.present()
        cue = sound_for(previous, view.kind)
        if cue is not None:
            self.sounds.play(cue)
        self.view = view
        if view.kind != "unavailable":
            self._last_shown = shown
        self.draws += 1
        return True

    def close(self) -> None:
        self.camera.close()
        self.remote.close()


class _Failures:
    """Logs a failure with its traceback the first time, then only when it changes: a bad
    retained message fails every redraw (up to MAX_FPS a second) until it is replaced."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._last: str | None = None

    def note(self, exc: Exception) -> None:
        self.count += 1
        reason = f"{type(exc).__name__}: {exc}"
        if reason != self._last:
            self._last = reason
            log.error("%s failed (%d so far); the screen goes on", self.what, self.count, exc_info=exc)

    def ok(self) -> None:
        if self._last is not None:
            log.info("%s works again", self.what)
            self._last = None


async def _consume(sub: Subscription, svc: ScreenService, dirty: asyncio.Event) -> None:
    failures = _Failures(f"a message on {sub.pattern}")
    async for rx in sub:
        # One message the screen cannot take must not end this topic's subscription (and with
        # it the daemon): the next message on the topic may well be fine.
        try:
            changed = svc.on_message(rx)
        except Exception as exc:
            failures.note(exc)
            continue
        failures.ok()
        if changed:
            dirty.set()


async def _render_loop(
    rt: Runtime, svc: ScreenService, dirty: asyncio.Event, pump: Callable[[], bool]
) -> None:
    last_draw = 0.0
    last_kind = None
    failures = _Failures("drawing the screen")
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TICK_S):
                await dirty.wait()
        # Coalesce a burst (a camera frame, a thermal frame and a state at once): one redraw.
        wait = last_draw + 1.0 / MAX_FPS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        dirty.clear()
        if not pump():
            log.info("the window was closed")
            rt.stop()
            return
        try:
            drew = svc.refresh(time.time(), time.monotonic())
        except pygame.error:
            raise  # the display is gone: a restart (systemd) opens it again
        except Exception as exc:
            # A view that cannot be drawn (one bad message) must not end the drawing: the
            # daemon would stop, and the retained message stop it again on every restart.
            # The view is not recorded as drawn, so the next tick tries again.
            failures.note(exc)
            continue
        failures.ok()
        if drew:
            last_draw = time.monotonic()
            assert svc.view is not None
            if svc.view.kind != last_kind:
                last_kind = svc.view.kind
                rt.status(f"showing {last_kind}")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def _watch_config(svc: ScreenService, dirty: asyncio.Event, path: Path) -> None:
    stamp = _stamp(path)
    while True:
        await asyncio.sleep(CONFIG_POLL_S)
        now = _stamp(path)
        if now == stamp:
            continue
        stamp = now
        try:
            config = await asyncio.to_thread(load_config, path)
        except ApplianceError as exc:
            log.warning("config changed but cannot be used (%s); keeping the current settings", exc)
            continue
        if config.screen != svc.config.screen or config.screening.units != svc.config.screening.units:
            log.info("config changed: screen settings reloaded")
        restart = [
            k
            for k in ("driver", "width", "height", "fullscreen")
            if getattr(config.screen, k) != getattr(svc.config.screen, k)
        ]
        if restart:
            log.warning(
                "screen.%s changed: takes effect when the screen daemon restarts", ", screen.".join(restart)
            )
        svc.reload(config)
        dirty.set()


def _config_to_watch(config: AppConfig) -> Path | None:
    """The config file this daemon was started from, if it can tell: the CLI may have been
    given another file (--config), and reloading from the default one would then be wrong."""
    path = config_path()
    try:
        same = load_config(path) == config
    except ApplianceError:
        same = False
    if not same:
        log.info("not watching %s for changes: this daemon was started from another config", path)
        return None
    return path


async def start(rt: Runtime) -> ScreenService:
    """Start every part on rt; returns the service (tests look at what it drew)."""
    bus = await rt.connect_bus()
    display = Display(rt.config.screen)
    rt.stack.callback(display.close)
    sounds = Sounds(rt.config.screen.sounds)
    rt.stack.callback(sounds.close)
    svc = ScreenService(rt.config, display.surface, display.flip, sounds, lambda: bus.connected)
    rt.stack.callback(svc.close)
    dirty = asyncio.Event()
    for topic in (*TOPICS, *FRAME_TOPICS):
        event = topic == "call.chat"
        sub = bus.subscribe(topic, maxsize=256 if event else 4)
        rt.spawn(_consume(sub, svc, dirty), f"sub:{topic}")
    rt.spawn(_render_loop(rt, svc, dirty, display.pump), "render")
    watched = _config_to_watch(rt.config)
    if watched is not None:
        rt.spawn(_watch_config(svc, dirty, watched), "config", critical=False)
    svc.refresh(time.time(), time.monotonic())
    if not rt.config.screen.sounds:
        audio = "sound off"
    else:
        audio = "sound on" if sounds.available else "no audio device"
    rt.ready(f"{display.driver} {display.size[0]}x{display.size[1]}, {audio}")
    return svc


async def main(rt: Runtime) -> None:
    await start(rt)
