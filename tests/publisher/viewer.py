"""A viewer played by aiortc in the test process: the room protocol, a real peer connection.

It does what the viewer page does: exchanges an invite for a session, opens the signaling
WebSocket, answers the kiosk's offer, joins on the events channel, and records what arrives:
decoded video frames (with their keyframe flag and arrival time), audio frames, every
data-channel message, and every signaling error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack

from appliance.publisher import channels
from appliance.room import protocol as p


class Tone(AudioStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz, paced like a microphone."""

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # silence with the right timing and pts
        t = (frame.pts + np.arange(frame.samples)) / frame.sample_rate
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        tone = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        tone.sample_rate, tone.pts, tone.time_base = frame.sample_rate, frame.pts, frame.time_base
        return tone


class Bars(VideoStreamTrack):
    """A small moving picture: a viewer's camera."""

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, :, 1] = 160
        image[:, (pts // 3000) % 160 :][:, :10] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@dataclass
class Received:
    video: list[tuple[float, bool]] = field(default_factory=list)  # (arrival, keyframe)
    audio_frames: int = 0
    messages: list[tuple[str, channels.ToViewer]] = field(default_factory=list)
    errors: list[p.Error] = field(default_factory=list)
    signals: list[p.ToClient] = field(default_factory=list)


class AiortcViewer:
    def __init__(
        self,
        room_url: str,
        invite: str = "invite1",
        *,
        name: str = "tester",
        last_seq: int | None = None,
        talk: MediaStreamTrack | None = None,
        camera: MediaStreamTrack | None = None,
        answer_sdp: str | None = None,
        join: bool = True,
        answer: bool = True,
    ) -> None:
        self.room_url = room_url
        self.invite = invite
        self.name = name
        self.last_seq = last_seq
        self.talk = talk
        self.camera = camera
        self.answer_sdp = answer_sdp  # a test can answer with something else
        self.join = join
        self.answer = answer
        self.got = Received()
        self.pc: RTCPeerConnection | None = None
        self.events_channel: Any = None
        self.peer_id: str | None = None
        self._http = aiohttp.ClientSession()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.video_receiver: RTCRtpReceiver | None = None
        self.offers = 0

    async def connect(self) -> None:
        async with self._http.post(
            f"{self.room_url}/api/v1/viewer/session", json={"invite": self.invite}
        ) as r:
            session = (await r.json())["session"]
        ws_url = self.room_url.replace("http", "ws", 1) + f"/api/v1/ws?session={session}"
        self._ws = await self._http.ws_connect(ws_url)
        self._spawn(self._read())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, msg: p.Msg) -> None:
        assert self._ws is not None
        await self._ws.send_str(p.encode(msg))

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = p.decode_to_client(message.data)
            self.got.signals.append(msg)
            if isinstance(msg, p.Welcome):
                self.peer_id = msg.peer_id
            elif isinstance(msg, p.Error):
                self.got.errors.append(msg)
            elif isinstance(msg, p.Offer):
                self.offers += 1
                if self.answer:
                    await self._answer(msg.sdp)

    async def _answer(self, sdp: str) -> None:
        if self.pc is not None:
            await self.pc.close()
        pc = self.pc = RTCPeerConnection()
        pc.on("datachannel", self._on_channel)
        pc.on("track", lambda track: self._spawn(self._consume(track)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self.video_receiver = None
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio" and self.talk is not None:
                transceiver.sender.replaceTrack(self.talk)
                transceiver.direction = "sendrecv"
            elif transceiver.kind == "video" and self.video_receiver is None:
                self.video_receiver = transceiver.receiver  # the first: the kiosk's camera
            elif transceiver.kind == "video" and self.camera is not None:
                transceiver.sender.replaceTrack(self.camera)  # the second: ours, for the kiosk
                transceiver.direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send(p.Answer(sdp=self.answer_sdp or pc.localDescription.sdp))

    def _on_channel(self, channel: Any) -> None:
        label = channel.label

        @channel.on("message")
        def on_message(data: str) -> None:
            msg = channels.decode_to_viewer(data)
            self.got.messages.append((label, msg))
            if isinstance(msg, channels.Hello) and self.join:
                channel.send(channels.encode(channels.Join(name=self.name, last_seq=self.last_seq)))

        if label == channels.EVENTS:
            self.events_channel = channel

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.got.video.append((time.monotonic(), bool(frame.key_frame)))
                else:
                    self.got.audio_frames += 1

    # --- helpers for tests ------------------------------------------------------------------

    def messages(self, kind: type[channels.Msg], label: str | None = None) -> list[Any]:
        return [m for lab, m in self.got.messages if isinstance(m, kind) and (label is None or lab == label)]

    def send_event(self, msg: channels.Msg | str) -> None:
        assert self.events_channel is not None
        self.events_channel.send(msg if isinstance(msg, str) else channels.encode(msg))

    async def send_pli(self) -> None:
        receiver = self.video_receiver
        assert receiver is not None
        sources = receiver.getSynchronizationSources()
        assert sources, "no video received yet"
        await receiver._send_rtcp_pli(sources[0].source)

    async def wait_for(self, cond: Any, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def close(self, *, bye: bool = True) -> None:
        if self._ws is not None and not self._ws.closed:
            if bye:
                with contextlib.suppress(Exception):
                    await self.send(p.Bye())
            await self._ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        await self._http.close()
