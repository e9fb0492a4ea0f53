"""The publisher's parts, wired in one place: started in order, stopped in reverse.

    service = PublisherService(bus, config, credentials)
    await service.start(rt.spawn)      # the daemon; the video bench starts it the same way
    ...
    await service.aclose()

Parts, in start order:
    CameraFeed     camera.h264 -> one passthrough track per viewer; camera.keyframe requests
    OpusFeed       the microphone (publisher.audio_backend) -> Opus once -> every viewer
    Speaker        the talking viewer's audio -> the kiosk speaker (or a null sink)
    RemoteVideo    a viewer's camera -> the call-remote-video ring (publisher.remote_video)
    Call           viewers, their peers and data channels, call.state
    RoomLink       the WebSocket to the room service, reconnecting forever
    bus pumps      thermal.frame, screening.state, screening.result, alert.fever, call.chat,
                   health.screening (after a bus reconnect: replay the events missed meanwhile)

Faults stay where they happen: a bus message that fails to be handled is logged and the pump
goes on; a viewer that fails is dropped alone (Call); a failing microphone is retried while
video and data go on (OpusFeed); a signaling loss is a reconnect (RoomLink).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.bus.client import BusClient, Received, Subscription
from appliance.bus.topics import (
    ChatMessage,
    Empty,
    FeverAlert,
    Ok,
    ScreeningResult,
    ScreeningState,
    ThermalFrame,
)
from appliance.config import AppConfig
from appliance.errors import BusError
from appliance.publisher import channels
from appliance.publisher.audio import OpusFeed
from appliance.publisher.call import Call, KioskInfo
from appliance.publisher.events import HISTORY, from_alert, from_result
from appliance.publisher.microphone import Microphone, make_microphone
from appliance.publisher.remote_video import RemoteVideo
from appliance.publisher.signaling import CredentialSource, RoomLink
from appliance.publisher.speaker import Speaker, make_speaker
from appliance.publisher.video import CameraFeed, VideoSource
from appliance.sim.scenario import CAMERA_HFOV_DEG, CAMERA_VFOV_DEG
from appliance.thermal.registers import FOV_DEG

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]
TICK_S = 1.0


async def ask_camera_for_keyframe(bus: BusClient) -> bool:
    reply: Ok = await bus.request("camera.keyframe", Empty(), timeout=1.0)
    return reply.ok


class PublisherService:
    def __init__(
        self,
        bus: BusClient,
        config: AppConfig,
        credentials: CredentialSource,
        *,
        video: VideoSource | None = None,
        microphone: Callable[[], Microphone] | None = None,
        speaker: Speaker | None = None,
        on_unauthorized: Callable[[], None] = lambda: None,
        on_status: Callable[[str, bool], None] = lambda text, degraded: None,
    ) -> None:
        pub = config.publisher
        self.bus = bus
        self.config = config
        self.feed = CameraFeed(lambda: ask_camera_for_keyframe(bus)) if video is None else None
        self.video: VideoSource = video if video is not None else self.feed  # type: ignore[assignment]
        self.audio = OpusFeed(microphone or (lambda: make_microphone(pub.audio_backend, pub.mic_device)))
        self.speaker = speaker or make_speaker(pub.audio_backend, pub.speaker_device)
        self.remote_video = (
            RemoteVideo(
                str(config.paths.run_dir), lambda notice: bus.publish_nowait("call.remote_video", notice)
            )
            if pub.remote_video
            else None
        )
        kiosk = KioskInfo(
            units=config.screening.units,
            threshold_c=config.screening.threshold_c,
            thermal_box=channels.thermal_box(CAMERA_HFOV_DEG, CAMERA_VFOV_DEG, FOV_DEG),
        )
        self.link = RoomLink(
            credentials, self._on_signal, on_state=self._on_room, on_unauthorized=on_unauthorized
        )
        self.call = Call(
            bus,
            self.link.send,
            video=self.video,
            audio=self.audio,
            speaker=self.speaker,
            remote_video=self.remote_video,
            max_viewers=pub.max_viewers,
            kiosk=kiosk,
        )
        self.on_status = on_status
        self._reconnects_seen = bus.reconnects
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._need_catch_up = False
        self._catching_up: asyncio.Task[None] | None = None

    def _on_signal(self, msg: Any) -> None:
        self.call.on_signal(msg)

    def _on_room(self, connected: bool) -> None:
        self.call.on_room(connected)

    async def start(self, spawn: Spawn) -> None:
        if self.feed is not None:
            spawn(self.feed.run(self._sub("camera.h264", 8)), "video")
        spawn(self._pump(self._sub("thermal.frame", 4), self._thermal), "thermal")
        spawn(self._pump(self._sub("screening.state", 16), self._screening_state), "state")
        spawn(self._pump(self._sub("screening.result"), self._result), "results")
        spawn(self._pump(self._sub("alert.fever"), self._alert), "alerts")
        spawn(self._pump(self._sub("call.chat", 256), self._chat), "chat")
        spawn(self._pump(self._sub("health.screening", 4), self._screening_health), "screening-health")
        self._own(self._prime())  # finite: not one of the daemon's critical loops
        spawn(self.link.run(), "room")
        spawn(self._ticker(), "tick")
        self.call.publish_state(force=True)
        pub = self.config.publisher
        log.info("publisher: up to %d viewers, audio %s", pub.max_viewers, pub.audio_backend)

    def _sub(self, pattern: str, maxsize: int = 1024) -> Subscription:
        sub = self.bus.subscribe(pattern, maxsize=maxsize)
        self._subs.append(sub)
        return sub

    async def _pump(self, sub: Subscription, handle: Callable[[Received], None]) -> None:
        async for rx in sub:
            try:
                handle(rx)
            except Exception:
                log.exception("handling %s failed", rx.topic)

    def _thermal(self, rx: Received) -> None:
        if isinstance(rx.msg, ThermalFrame):
            self.call.on_thermal(rx.msg)

    def _screening_state(self, rx: Received) -> None:
        if isinstance(rx.msg, ScreeningState):
            self.call.on_screening_state(rx.msg)

    def _result(self, rx: Received) -> None:
        if isinstance(rx.msg, ScreeningResult):
            self.call.on_event(from_result(rx.msg))

    def _alert(self, rx: Received) -> None:
        if isinstance(rx.msg, FeverAlert):
            self.call.on_event(from_alert(rx.msg))

    def _chat(self, rx: Received) -> None:
        if isinstance(rx.msg, ChatMessage):
            self.call.on_kiosk_chat(rx.msg)

    def _screening_health(self, rx: Received) -> None:
        # The broker re-sends retained values to a client that reconnected, so this fires
        # after every reconnect of ours: events published while we were away never reached
        # us and are fetched from the screening daemon's store. It may not be back on the bus
        # yet (a broker restart reconnects everyone in some order); its own health, published
        # again when it returns, lands here too, and the catch-up retries meanwhile.
        if self.bus.reconnects != self._reconnects_seen:
            self._reconnects_seen = self.bus.reconnects
            self._need_catch_up = True
        if self._need_catch_up and self._catching_up is None:
            self._catching_up = self._own(self._catch_up())

    def _own(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _catch_up(self) -> None:
        try:
            await self._catch_up_until_done()
        finally:
            self._catching_up = None

    async def _catch_up_until_done(self) -> None:
        delay = 0.5
        while self._need_catch_up:
            try:
                n = await self.call.catch_up()
            except (BusError, TimeoutError) as exc:
                log.info("cannot replay events missed during a bus outage yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._need_catch_up = False
            if n:
                log.info("replayed %d events missed during a bus outage", n)

    async def _prime(self) -> None:
        # The screening daemon may start after us: keep trying for a while, then give up
        # quietly (viewers then start with an empty history, nothing else is affected).
        for attempt in range(10):
            try:
                await self.call.prime(HISTORY)
                return
            except (BusError, TimeoutError) as exc:
                if attempt == 0:
                    log.info("no event history yet (%s); retrying", exc)
                await asyncio.sleep(min(30.0, 2.0**attempt))

    def status(self) -> tuple[str, bool]:
        """The daemon's status line, and whether it is degraded: a microphone, speaker or
        picture-in-picture ring that failed, or a room service that refuses the kiosk (a
        revoked token, a disabled device: no viewer can call until someone acts). Calls go on
        without them, so the daemon stays up, but whoever looks at the kiosk's health must
        see what the viewers are missing."""
        pub = self.config.publisher
        faults = [
            fault
            for fault in (
                f"room: {self.link.refused}" if self.link.refused else None,
                self.audio.fault,
                self.speaker.fault,
                self.remote_video.fault if self.remote_video is not None else None,
            )
            if fault
        ]
        if faults:
            return "; ".join(faults), True
        return f"up to {pub.max_viewers} viewers; audio {pub.audio_backend}", False

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.call.tick()
                self.on_status(*self.status())
            except Exception:
                log.exception("call tick failed")

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.call.close()
        await self.audio.aclose()
        if self.feed is not None:
            await self.feed.aclose()
        for sub in self._subs:
            sub.close()
        with contextlib.suppress(Exception):
            self.speaker.close()
