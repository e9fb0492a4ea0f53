"""One viewer's RTCPeerConnection: the kiosk's offer, its media, its data channels, its end.

The kiosk offers (appliance.room.protocol), so it chooses the media sections, in this order:

    0  video  sendonly  the camera: H.264 only (profile-level-id 42e01f, packetization-mode 1),
                        passed through from camera.h264, with RTX for NACKed packets; no
                        bandwidth estimate asked of the viewer (without_bandwidth_estimation)
    1  audio  sendrecv  the kiosk's microphone as Opus (encoded once, sent while the viewer
                        listens); the viewer's push-to-talk microphone comes back on it
    2  video  recvonly  the viewer's own camera, small, for the kiosk screen's
                        picture-in-picture (only with publisher.remote_video)
       data             "telemetry" (unordered, maxRetransmits 0) and "events" (reliable)

Everything rides one bundled ICE/DTLS transport (max-bundle), so a viewer costs one UDP socket
per local address. aiortc gathers candidates while setting the local description, so the
offer carries them all; the viewer's trickled candidates are added as they come.

Packetising: the camera's sender gets video.SharedPacketizer in place of aiortc's H264Encoder,
so an access unit is split into RTP payloads once for all viewers (see video.py), and
aiortc_sender_loop's leaner RTP loop in place of aiortc's, so what each viewer costs (headers,
SRTP, the socket) costs less.

Keyframes: aiortc's RTCRtpSender answers PLI and FIR by calling its `_send_keyframe()`, which
only flags its own encoder; with pre-encoded packets that does nothing. The sender's bound
method is therefore wrapped per instance so that the request also reaches the video source
(which asks the camera). This relies on that one private method name of aiortc 1.x; a test
(tests/publisher/test_peer.py, a PLI over a real connection) fails if aiortc changes it.

Received media is always read, whether or not it is used: aiortc queues decoded frames for a
track without bound until someone calls recv(), so an unread viewer microphone would grow
memory for as long as the call lasts.

`close()` is idempotent and leaves nothing behind: the connection (its sockets, its sender,
receiver and decoder tasks and threads), the tasks reading remote media, the tracks given to
the feeds, and the timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription, candidate_from_sdp

from appliance.publisher import (
    aiortc_report_clock,
    aiortc_rtcp_router,
    aiortc_sender_loop,
    aiortc_sender_reports,
    channels,
)
from appliance.publisher.audio import OpusFeed, OpusTrack
from appliance.publisher.video import PassthroughTrack, SharedPacketizer, VideoSource
from appliance.room import protocol

log = logging.getLogger(__name__)

CAMERA_MLINE = 0  # the camera's media section: the first transceiver added
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def without_bandwidth_estimation(sdp: str, index: int) -> str:
    """The offer, asking no receiver-side bandwidth estimate for media section `index`: no
    goog-remb feedback on its codecs and no abs-send-time header extension (what a receiver
    estimates from; aiortc's receiver sends REMB whenever packets carry it).

    Why: the camera's H.264 is encoded once, at one bitrate, for every viewer, so there is
    nothing a viewer's estimate could change. Asked for, every viewer sends a REMB about twice
    a second (two thirds of the RTCP an aiortc viewer sends), each one waking the publisher to
    decrypt, parse and drop it, and every video packet carries 4 more bytes."""
    description = SessionDescription.parse(sdp)
    media = description.media[index]
    for codec in media.rtp.codecs:
        codec.rtcpFeedback = [fb for fb in codec.rtcpFeedback if fb.type != "goog-remb"]
    media.rtp.headerExtensions = [e for e in media.rtp.headerExtensions if e.uri != ABS_SEND_TIME]
    return str(description)


H264_PROFILE_LEVEL_ID = "42e01f"
CLOSE_TIMEOUT_S = 5.0
# Past this much unsent data a telemetry message is skipped for this viewer: the newest
# frame will follow, and a backlog would only add latency.
TELEMETRY_BUFFER_LIMIT = 64 * 1024
# An events channel this far behind belongs to a viewer that stopped reading.
EVENTS_BUFFER_LIMIT = 1024 * 1024


class PeerError(Exception):
    """The viewer sent something this connection cannot use (bad SDP, bad candidate)."""


def h264_preferences() -> list[RTCRtpCodecCapability]:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = [
        c
        for c in codecs
        if c.mimeType.lower() == "video/h264"
        and c.parameters.get("profile-level-id") == H264_PROFILE_LEVEL_ID
        and str(c.parameters.get("packetization-mode")) == "1"
    ]
    if not h264:
        raise RuntimeError(f"this aiortc offers no H.264 {H264_PROFILE_LEVEL_ID}")
    return h264 + [c for c in codecs if c.mimeType.lower() == "video/rtx"]


def viewer_video_preferences() -> list[RTCRtpCodecCapability]:
    # VP8 first: every browser can encode it in software, while H.264 encoding depends on
    # how the browser was built. aiortc decodes both.
    codecs = RTCRtpSender.getCapabilities("video").codecs
    vp8 = [c for c in codecs if c.mimeType.lower() == "video/vp8"]
    h264 = [c for c in codecs if c.mimeType.lower() == "video/h264"]
    return vp8 + h264 + [c for c in codecs if c.mimeType.lower() == "video/rtx"]


def opus_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


def rtc_configuration(servers: list[protocol.IceServer]) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


class ViewerPeer:
    def __init__(
        self,
        viewer_id: str,
        ice_servers: list[protocol.IceServer],
        *,
        video: VideoSource,
        audio: OpusFeed | None,
        remote_video: bool,
        on_message: Callable[[ViewerPeer, str | bytes], None],
        on_events_open: Callable[[ViewerPeer], None],
        on_audio: Callable[[ViewerPeer, av.AudioFrame], None],
        on_video: Callable[[ViewerPeer, av.VideoFrame], None],
        on_closed: Callable[[ViewerPeer, str], None],
    ) -> None:
        self.viewer_id = viewer_id
        self._on_message = on_message
        self._on_events_open = on_events_open
        self._on_audio = on_audio
        self._on_video = on_video
        self._on_closed = on_closed
        aiortc_rtcp_router.install()  # once per process; every RTCP packet a viewer sends
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self._tracks: list[MediaStreamTrack] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Task[None] | None = None
        self.state = "new"
        self.pli = 0
        self.answered = False
        self._passthrough = False

        video_track = video.track()
        self._tracks.append(video_track)
        camera = self.pc.addTransceiver(video_track, direction="sendonly")
        self.video_sender = camera.sender
        camera.setCodecPreferences(h264_preferences())
        self._hook_picture_loss(camera.sender, video)
        if isinstance(video_track, PassthroughTrack):
            self._passthrough = True
            # Packetised once for all viewers (video.py); only H.264 can be negotiated here.
            setattr(camera.sender, "_RTCRtpSender__encoder", SharedPacketizer())  # noqa: B010
            aiortc_sender_loop.install(camera.sender)
        aiortc_sender_reports.install(camera.sender)
        # RTCP reports on the camera's frames rather than timers of their own: on every sender
        # and receiver aiortc would start (a recvonly transceiver's sender never sends).
        clock = video.report_clock
        if clock is not None:
            aiortc_report_clock.install_sender(camera.sender, clock)

        self.audio_track: OpusTrack | None = None
        if audio is not None:
            self.audio_track = audio.track()
            self._tracks.append(self.audio_track)
            mic = self.pc.addTransceiver(self.audio_track, direction="sendrecv")
            aiortc_sender_reports.install(mic.sender)  # silent until the viewer unmutes
            if clock is not None:
                aiortc_report_clock.install_sender(mic.sender, clock)
        else:
            mic = self.pc.addTransceiver("audio", direction="recvonly")
        if clock is not None:
            aiortc_report_clock.install_receiver(mic.receiver, clock)
        mic.setCodecPreferences(opus_preferences())
        if remote_video:
            viewer_camera = self.pc.addTransceiver("video", direction="recvonly")
            viewer_camera.setCodecPreferences(viewer_video_preferences())
            if clock is not None:
                aiortc_report_clock.install_receiver(viewer_camera.receiver, clock)

        self.telemetry = self.pc.createDataChannel(channels.TELEMETRY, ordered=False, maxRetransmits=0)
        self.events = self.pc.createDataChannel(channels.EVENTS)
        self.events.on("open", lambda: self._on_events_open(self))
        self.events.on("message", lambda data: self._on_message(self, data))
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def _hook_picture_loss(self, sender: RTCRtpSender, video: VideoSource) -> None:
        original = sender._send_keyframe

        def send_keyframe() -> None:
            self.pli += 1
            original()  # keeps aiortc's own behaviour for a source that encodes in aiortc
            video.picture_lost()

        # An instance attribute shadows the method for this sender only (see the docstring).
        setattr(sender, "_send_keyframe", send_keyframe)  # noqa: B010 - mypy forbids assigning to a method

    # --- negotiation ------------------------------------------------------------------------

    async def offer(self) -> str:
        offer = await self.pc.createOffer()
        sdp = offer.sdp
        if self._passthrough:
            sdp = without_bandwidth_estimation(sdp, CAMERA_MLINE)
        await self.pc.setLocalDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        if self.answered or self.pc.signalingState != "have-local-offer":
            raise PeerError(f"no answer expected now (signaling state {self.pc.signalingState})")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError, AssertionError, KeyError... on bad SDP
            raise PeerError(f"the answer's SDP was refused: {type(exc).__name__}: {exc}") from None
        self.answered = True

    async def add_candidate(self, candidate: protocol.IceCandidate | None) -> None:
        if candidate is None or not candidate.candidate:
            return  # end of candidates: aiortc needs no signal for it
        text = candidate.candidate.removeprefix("candidate:")
        try:
            parsed = candidate_from_sdp(text)
        except Exception as exc:
            raise PeerError(f"bad ICE candidate: {type(exc).__name__}: {exc}") from None
        parsed.sdpMid = candidate.sdpMid
        parsed.sdpMLineIndex = candidate.sdpMLineIndex
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0  # bundled: every section shares the first one's transport
        if self.pc.remoteDescription is None:
            raise PeerError("an ICE candidate before the answer")
        try:
            await self.pc.addIceCandidate(parsed)
        except Exception as exc:
            raise PeerError(f"ICE candidate refused: {type(exc).__name__}: {exc}") from None

    # --- data channels ----------------------------------------------------------------------

    def send_telemetry(self, text: str) -> bool:
        ch = self.telemetry
        if ch.readyState != "open" or ch.bufferedAmount > TELEMETRY_BUFFER_LIMIT:
            return False
        return self._send(ch, text)

    def send_event(self, text: str) -> bool:
        ch = self.events
        if ch.readyState != "open":
            return False
        if ch.bufferedAmount > EVENTS_BUFFER_LIMIT:
            self.close_soon("the viewer stopped reading its events channel")
            return False
        return self._send(ch, text)

    def _send(self, ch: RTCDataChannel, text: str) -> bool:
        try:
            ch.send(text)
        except Exception as exc:  # closed under us (InvalidStateError), SCTP gone
            log.debug("viewer %s: send on %s failed: %s", self.viewer_id, ch.label, exc)
            return False
        return True

    # --- remote media -----------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self._closing is not None:
            return
        task = asyncio.get_running_loop().create_task(self._drain(track), name=f"viewer-{track.kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, track: MediaStreamTrack) -> None:
        deliver = self._on_audio if track.kind == "audio" else self._on_video
        try:
            while True:
                frame = await track.recv()
                try:
                    deliver(self, frame)  # type: ignore[arg-type]
                except Exception:
                    log.exception("viewer %s: handling its %s failed", self.viewer_id, track.kind)
        except MediaStreamError:
            pass

    # --- state ------------------------------------------------------------------------------

    def _on_state(self) -> None:
        self.state = self.pc.connectionState
        if self.state in ("failed", "closed"):
            self.close_soon(f"connection {self.state}")

    async def stats(self) -> dict[str, Any]:
        """What call.state reads (stats.viewer_stats): the video sender's report, which holds
        the viewer's receiver reports on our video and the transport's counters (one transport:
        max-bundle). pc.getStats() would build every sender's and receiver's report as well,
        every second, for every viewer."""
        return dict(await self.video_sender.getStats())

    def close_soon(self, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.close(reason), name="viewer-close")

    async def close(self, reason: str = "closed") -> None:
        if self._closing is not None and self._closing is not asyncio.current_task():
            await asyncio.shield(self._closing)
            return
        if self._closing is None:
            self._closing = asyncio.current_task()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.pc.close()
        except TimeoutError:
            log.warning(
                "viewer %s: the peer connection took over %g s to close", self.viewer_id, CLOSE_TIMEOUT_S
            )
        except Exception:
            log.exception("viewer %s: error closing the peer connection", self.viewer_id)
        for track in self._tracks:
            track.stop()
        self._tracks.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pc.remove_all_listeners()
        self.events.remove_all_listeners()
        self.telemetry.remove_all_listeners()
        self.state = "closed"
        with contextlib.suppress(Exception):
            self._on_closed(self, reason)
