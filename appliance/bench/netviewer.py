"""A viewer for the network bench, run as its own process (in the room service's namespace).

    python -m appliance.bench.netviewer --base http://10.213.0.2:8443 --invite TOKEN

It does what the viewer page (appliance/room/static/viewer.js) does, with aiortc instead of a
browser: a session for the invite, the signaling WebSocket (reconnected with backoff), an answer
to each offer of the kiosk, and on every new events channel a join with the last seq it has seen,
so the kiosk replays what it missed; a kiosk that goes offline closes the call, a call that
fails or ends is asked for again. It acknowledges each event as the page does.

It prints one JSON object a line on stdout, each with "t" (time.monotonic(), the same clock as
the bench's) and "wall" (time.time()):

    {"kind": "frames", "n": total video frames so far}        every REPORT_S
    {"kind": "video-resumed", "gap_s": s}                      the first frame after a gap
    {"kind": "event", "seq", "topic", "live"}                  every event message, as it came
    {"kind": "hello", "last_seq"} / {"kind": "join", "last_seq"}
    {"kind": "welcome" | "presence", "device_online"}
    {"kind": "offer"} / {"kind": "bye"} / {"kind": "pc", "state"}
    {"kind": "error", "where", "message"}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from appliance.publisher import channels
from appliance.room import protocol as p

REPORT_S = 0.25
GAP_S = 1.0  # a pause this long between frames is a stall; the frame after it is a resume


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"t": time.monotonic(), "wall": time.time(), "kind": kind, **fields}), flush=True)


class Backoff:
    """The page's: 0.5 s doubling to 30 s, full jitter in [0.5, 1.5) of the step."""

    def __init__(self) -> None:
        self.step = 0.0

    def next(self) -> float:
        self.step = min(self.step * 2, 30.0) if self.step else 0.5
        return self.step * (0.5 + random.random())

    def reset(self) -> None:
        self.step = 0.0


class NetViewer:
    def __init__(self, base: str, invite: str, name: str) -> None:
        self.base = base.rstrip("/")
        self.invite = invite
        self.name = name
        self.last_seq: int | None = None
        self.frames = 0
        self.last_frame = 0.0
        self.pc: RTCPeerConnection | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.backoff = Backoff()
        self._offer_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        self._spawn(self._report())
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    await self._signaling(http)
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    emit("error", where="signaling", message=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.backoff.next())

    async def _signaling(self, http: aiohttp.ClientSession) -> None:
        async with http.post(f"{self.base}/api/v1/viewer/session", json={"invite": self.invite}) as r:
            r.raise_for_status()
            session = (await r.json())["session"]
        url = self.base.replace("http://", "ws://", 1) + f"/api/v1/ws?session={session}"
        async with http.ws_connect(url, heartbeat=10.0) as ws:
            self.ws = ws
            try:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    await self._on_signal(p.decode_to_client(message.data))
            finally:
                self.ws = None
        emit("error", where="signaling", message="the room service closed the connection")

    async def _send(self, msg: p.Msg) -> None:
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self.ws.send_str(p.encode(msg))

    async def _on_signal(self, msg: p.ToClient) -> None:
        if isinstance(msg, p.Welcome):
            self.backoff.reset()
            emit("welcome", device_online=msg.device_online)
        elif isinstance(msg, p.Presence):
            emit("presence", device_online=msg.device_online)
            if not msg.device_online:
                await self._close_pc()
        elif isinstance(msg, p.Offer):
            emit("offer")
            try:
                await self._answer(msg.sdp)
            except Exception as exc:
                emit("error", where="answer", message=f"{type(exc).__name__}: {exc}")
                self._request_offer()
        elif isinstance(msg, p.Bye):
            emit("bye")
            await self._close_pc()
            self._request_offer()
        elif isinstance(msg, p.Error):
            emit("error", where="room", message=f"{msg.code}: {msg.message}")

    def _request_offer(self) -> None:
        if self._offer_timer is not None:
            self._offer_timer.cancel()
        self._offer_timer = asyncio.get_running_loop().call_later(
            self.backoff.next(), lambda: self._spawn(self._send(p.RequestOffer()))
        )

    async def _answer(self, sdp: str) -> None:
        await self._close_pc()
        pc = RTCPeerConnection()
        self.pc = pc
        pc.on("track", lambda track: self._spawn(self._consume(track)))
        pc.on("datachannel", self._on_channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc is not pc:
                return
            emit("pc", state=pc.connectionState)
            if pc.connectionState == "connected":
                self.backoff.reset()
            elif pc.connectionState == "failed":
                await self._close_pc()
                await self._send(p.Bye())
                self._request_offer()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send(p.Answer(sdp=pc.localDescription.sdp))

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    def _on_channel(self, channel: Any) -> None:
        if channel.label != channels.EVENTS:
            return

        def send(msg: channels.Msg) -> None:
            with contextlib.suppress(Exception):
                channel.send(channels.encode(msg))

        def on_message(data: str | bytes) -> None:
            try:
                msg = channels.decode_to_viewer(data)
            except Exception as exc:
                emit("error", where="events", message=f"{type(exc).__name__}: {exc}")
                return
            if isinstance(msg, channels.Hello):
                emit("hello", last_seq=msg.last_seq)
                emit("join", last_seq=self.last_seq)
                send(channels.Join(name=self.name, last_seq=self.last_seq))
            elif isinstance(msg, channels.Event):
                emit("event", seq=msg.seq, topic=msg.topic, live=msg.live)
                # Acknowledge receipt (cumulative): a new call resumes after this seq.
                if self.last_seq is None or msg.seq > self.last_seq:
                    self.last_seq = msg.seq
                send(channels.Ack(seq=self.last_seq))
            elif isinstance(msg, channels.Problem):
                emit("error", where="kiosk", message=f"{msg.code}: {msg.message}")

        channel.on("message", on_message)

    async def _consume(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind != "video":
                    continue
                now = time.monotonic()
                if self.frames and now - self.last_frame >= GAP_S:
                    emit("video-resumed", gap_s=round(now - self.last_frame, 3))
                self.frames += 1
                self.last_frame = now

    async def _report(self) -> None:
        while True:
            emit("frames", n=self.frames)
            await asyncio.sleep(REPORT_S)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m appliance.bench.netviewer")
    parser.add_argument("--base", required=True, help="the room service, http://host:port")
    parser.add_argument("--invite", required=True, help="the invite token of a viewer link")
    parser.add_argument("--name", default="net-viewer")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(NetViewer(args.base, args.invite, args.name).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
