"""The kiosk's side of the call: viewers coming and going, and what each of them is sent.

`Call` is driven from outside and does no I/O of its own beyond the peers it owns:

    signaling (RoomLink)  ->  on_signal(msg), on_room(connected)
    the bus               ->  on_thermal, on_screening_state, on_event, on_kiosk_chat
    a 1 s timer           ->  tick()          (stats, state refresh, call.state)

One `Viewer` per viewer id from the room service, each with its own RTCPeerConnection
(ViewerPeer) and its own task working through that viewer's signaling in order (offer,
answer, candidates), so a slow negotiation for one viewer never holds up another, and a bad
SDP or candidate from one viewer gets an error sent to that viewer only.

Limits: at most `max_viewers` at once; one more gets `error room-full` (to that viewer). A viewer
announced again (it asked for a new call, or the signaling reconnected) replaces its old peer.
Peers survive a signaling outage -- media and data flow peer to peer -- but belong to the old
signaling session: they make room for new viewers when the room is full, and are closed if the
room service does not announce their viewer again within STALE_GRACE_S of the reconnect.

Push-to-talk is a floor: one viewer at a time holds it and only that viewer's audio reaches
the kiosk speaker; everyone sees who holds it (`talk` messages) and call.state says talking.
A holder whose audio stops for FLOOR_SILENCE_S (its page or network died) loses the floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
import msgspec

from appliance.bus.client import BusClient
from appliance.bus.topics import (
    AlertAck,
    CallState,
    ChatMessage,
    EventsPage,
    EventsSince,
    ScreeningState,
    ThermalFrame,
    ViewerStats,
)
from appliance.errors import BusError
from appliance.publisher import channels
from appliance.publisher.audio import OpusFeed
from appliance.publisher.events import EventLog, ViewerCursor, pages
from appliance.publisher.peer import PeerError, ViewerPeer
from appliance.publisher.remote_video import RemoteVideo
from appliance.publisher.speaker import Speaker
from appliance.publisher.stats import Sample, viewer_stats
from appliance.publisher.video import VideoSource
from appliance.room import protocol

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 30.0  # from our offer to the viewer's answer
CONNECT_TIMEOUT_S = 30.0  # from the answer to a connected transport
STALE_GRACE_S = 15.0
STATE_REFRESH_S = 1.0
LIVE_WINDOW_S = 60.0  # an event missed during a bus outage still alarms if it is this recent
CATCH_UP_LIMIT = 2000  # results (each with its alert, if any) replayed to one viewer at most
# Trickled ICE candidates one call takes. A browser sends a handful (a few dozen with many
# interfaces and TURN servers); each one costs aioice more than the last (it looks through
# and sorts all it holds), so a viewer trickling new ones for as long as its call lasts
# would end up taking the event loop from every call.
MAX_REMOTE_CANDIDATES = 100
# Chat lines per viewer: a burst of CHAT_BURST, then one every CHAT_EVERY_S. A line goes to the
# kiosk's screen and to every other viewer, and the general message limit (20/s, for acks)
# would let one viewer bury both.
CHAT_BURST = 5
CHAT_EVERY_S = 1.0
_ECHOES = 32
# Push-to-talk: a floor holder that has sent no audio for this long is gone (its page or its
# network died; ICE takes some 30 s to say so). A talking browser sends a frame every 20 ms,
# silent or not, so this is never a pause in speech.
FLOOR_SILENCE_S = 5.0
# One viewer's getStats gets this long; tick() waits on each in turn, and a tick held up holds up
# the floor check and call.state for every viewer.
STATS_TIMEOUT_S = 0.5


@dataclass
class Viewer:
    id: str
    peer: ViewerPeer
    session: int
    joined_at: float
    name: str = ""
    joined: bool = False  # its join message arrived
    catching_up: bool = False
    backlog: deque[channels.Event] = field(default_factory=deque)
    cursor: ViewerCursor = field(default_factory=ViewerCursor)
    bucket: channels.TokenBucket = field(default_factory=channels.TokenBucket)
    inbox: asyncio.Queue[protocol.Answer | protocol.Ice] = field(default_factory=asyncio.Queue)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    candidates: int = 0  # remote ICE candidates added
    chat_bucket: channels.TokenBucket = field(
        default_factory=lambda: channels.TokenBucket(
            rate=1.0 / CHAT_EVERY_S, burst=CHAT_BURST, tokens=CHAT_BURST
        )
    )
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sample: Sample | None = None
    stats: ViewerStats | None = None

    @property
    def label(self) -> str:
        return self.name or f"viewer {self.id[:8]}"


@dataclass(frozen=True)
class KioskInfo:
    units: str  # "C" | "F"
    threshold_c: float
    thermal_box: tuple[float, float, float, float]
    name: str = "kiosk"


class Call:
    def __init__(
        self,
        bus: BusClient,
        send: Callable[[protocol.Msg], Awaitable[bool]],
        *,
        video: VideoSource,
        audio: OpusFeed | None,
        speaker: Speaker,
        remote_video: RemoteVideo | None,
        max_viewers: int,
        kiosk: KioskInfo,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self._send = send
        self.video = video
        self.audio = audio
        self.speaker = speaker
        self.remote_video = remote_video
        self.max_viewers = max_viewers
        self.kiosk = kiosk
        self.clock = clock
        self.viewers: dict[str, Viewer] = {}
        self.events = EventLog()
        self.ice_servers: list[protocol.IceServer] = []
        self.room_connected = False
        self.session = 0
        self.floor: str | None = None
        self._floor_heard_at = 0.0  # the floor's grant or its holder's latest audio frame
        self._state: ScreeningState | None = None
        self._state_sent_at = 0.0
        self._echoes: deque[tuple[str, str, float]] = deque(maxlen=_ECHOES)
        self._tasks: set[asyncio.Task[None]] = set()
        self._published: CallState | None = None
        self._closed = False
        self.refused_full = 0
        self._stale_timer: asyncio.Task[None] | None = None

    # --- signaling --------------------------------------------------------------------------

    def on_room(self, connected: bool) -> None:
        self.room_connected = connected
        self.publish_state()

    def on_signal(self, msg: protocol.ToClient) -> None:
        if self._closed:
            return
        if isinstance(msg, protocol.Welcome):
            self._welcome(msg)
        elif isinstance(msg, protocol.ViewerJoined):
            self._viewer_joined(msg.viewer_id)
        elif isinstance(msg, protocol.Answer | protocol.Ice):
            viewer = self.viewers.get(msg.from_ or "")
            if viewer is None:
                if msg.from_:
                    self._signal(
                        protocol.Error(
                            code="no-such-viewer", message="no call for you here", ref=_ref(msg), to=msg.from_
                        )
                    )
                return
            viewer.inbox.put_nowait(msg)
        elif isinstance(msg, protocol.ViewerLeft):
            self.drop(msg.viewer_id, "left the room")
        elif isinstance(msg, protocol.Bye):
            if msg.to:
                self.drop(msg.to, "said bye")
        elif isinstance(msg, protocol.Error):
            log.warning("room service: error %s: %s (ref %s)", msg.code, msg.message, msg.ref)
        elif isinstance(msg, protocol.Offer):
            log.warning("room service relayed an offer to the device; the device offers, ignored")

    def _welcome(self, msg: protocol.Welcome) -> None:
        self.ice_servers = list(msg.ice_servers)
        self.kiosk = dataclasses.replace(self.kiosk, name=msg.room.name)
        self.session += 1
        stale = [v for v in self.viewers.values() if v.session < self.session]
        if stale:
            log.info("signaling reconnected; %d call(s) from before kept until re-announced", len(stale))
            if self._stale_timer is not None:
                self._stale_timer.cancel()
            self._stale_timer = asyncio.ensure_future(self._expire_stale(self.session))

    async def _expire_stale(self, session: int) -> None:
        await asyncio.sleep(STALE_GRACE_S)
        for viewer in list(self.viewers.values()):
            if viewer.session < session:
                self.drop(viewer.id, "not announced again after the signaling reconnected")

    def _viewer_joined(self, viewer_id: str) -> None:
        if viewer_id in self.viewers:
            self.drop(viewer_id, "asked for a new call")
        live = [v for v in self.viewers.values() if v.session == self.session]
        if len(live) >= self.max_viewers:
            self.refused_full += 1
            log.info("room full (%d viewers): refusing %s", self.max_viewers, viewer_id)
            self._signal(
                protocol.Error(
                    code="room-full",
                    message=f"this kiosk takes at most {self.max_viewers} viewer"
                    f"{'s' if self.max_viewers != 1 else ''} at once; try again later",
                    to=viewer_id,
                )
            )
            return
        if len(self.viewers) >= self.max_viewers:
            oldest = min(
                (v for v in self.viewers.values() if v.session < self.session), key=lambda v: v.joined_at
            )
            self.drop(oldest.id, "made room after the signaling reconnected")
        try:
            peer = ViewerPeer(
                viewer_id,
                self.ice_servers,
                video=self.video,
                audio=self.audio,
                remote_video=self.remote_video is not None,
                on_message=self._on_channel_message,
                on_events_open=self._on_events_open,
                on_audio=self._on_viewer_audio,
                on_video=self._on_viewer_video,
                on_closed=self._on_peer_closed,
            )
        except Exception:
            log.exception("cannot set up a peer connection for %s", viewer_id)
            self._signal(
                protocol.Error(code="internal", message="the kiosk could not start a call", to=viewer_id)
            )
            return
        viewer = Viewer(viewer_id, peer, self.session, self.clock())
        self.viewers[viewer_id] = viewer
        log.info("viewer %s joined (%d of %d)", viewer_id, len(self.viewers), self.max_viewers)
        self._viewer_task(viewer, self._negotiate(viewer), "negotiate")
        self.publish_state()

    async def _negotiate(self, viewer: Viewer) -> None:
        peer = viewer.peer
        sdp = await peer.offer()
        if not await self._send(protocol.Offer(to=viewer.id, sdp=sdp)):
            self.drop(viewer.id, "the offer could not be sent")
            return
        async with asyncio.timeout(ANSWER_TIMEOUT_S) as deadline:
            while not peer.answered:
                msg = await viewer.inbox.get()
                await self._handle_signal(viewer, msg)
                if viewer.id not in self.viewers:
                    return
            deadline.reschedule(asyncio.get_running_loop().time() + CONNECT_TIMEOUT_S)
            watch = asyncio.ensure_future(viewer.connected.wait())
            get: asyncio.Future[protocol.Answer | protocol.Ice] | None = None
            try:
                while not viewer.connected.is_set():
                    get = asyncio.ensure_future(viewer.inbox.get())
                    done, _ = await asyncio.wait({get, watch}, return_when=asyncio.FIRST_COMPLETED)
                    if get in done:
                        await self._handle_signal(viewer, get.result())
                    else:
                        get.cancel()
            finally:
                # Cancelled (the viewer left) or timed out: neither wait may outlive the call.
                watch.cancel()
                if get is not None:
                    get.cancel()
        # Connected: later candidates (a network change) are still applied.
        while True:
            await self._handle_signal(viewer, await viewer.inbox.get())

    async def _handle_signal(self, viewer: Viewer, msg: protocol.Answer | protocol.Ice) -> None:
        try:
            if isinstance(msg, protocol.Answer):
                await viewer.peer.answer(msg.sdp)
            elif msg.candidate is None or not msg.candidate.candidate:
                await viewer.peer.add_candidate(None)  # end of candidates
            elif viewer.candidates >= MAX_REMOTE_CANDIDATES:
                raise PeerError(f"more than {MAX_REMOTE_CANDIDATES} ICE candidates for one call")
            else:
                await viewer.peer.add_candidate(msg.candidate)
                viewer.candidates += 1
        except PeerError as exc:
            log.info("viewer %s: %s", viewer.id, exc)
            self._signal(
                protocol.Error(code="bad-message", message=str(exc)[:500], ref=_ref(msg), to=viewer.id)
            )
            if isinstance(msg, protocol.Answer) and not viewer.peer.answered:
                # Without a usable answer this call cannot start; the viewer may ask again.
                self.drop(viewer.id, "its answer was refused")

    def drop(self, viewer_id: str, reason: str) -> None:
        """End one viewer's call and forget it (idempotent)."""
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None:
            return
        log.info("viewer %s: call ended (%s)", viewer_id, reason)
        current = asyncio.current_task()
        for task in list(viewer.tasks):
            if task is not current:
                task.cancel()
        if self.floor == viewer_id:
            self._release_floor()
        if self.remote_video is not None:
            self.remote_video.viewer_left(viewer_id)
        self._spawn(viewer.peer.close(reason), "close-peer")
        self.publish_state()

    def _viewer_of(self, peer: ViewerPeer) -> Viewer | None:
        """The viewer whose current call `peer` carries: None for a peer already dropped, even
        one whose viewer has a new call meanwhile (it is closing, yet may still report)."""
        viewer = self.viewers.get(peer.viewer_id)
        return viewer if viewer is not None and viewer.peer is peer else None

    def _on_peer_closed(self, peer: ViewerPeer, reason: str) -> None:
        if self._viewer_of(peer) is not None:
            # The connection ended by itself (failed ICE, the viewer closed it): tell the
            # viewer's page, which can ask for a new call.
            self._signal(protocol.Bye(to=peer.viewer_id))
            self.drop(peer.viewer_id, reason)

    def _signal(self, msg: protocol.Msg) -> None:
        self._spawn(self._send_quietly(msg), "signal")

    async def _send_quietly(self, msg: protocol.Msg) -> None:
        await self._send(msg)

    # --- data channels ----------------------------------------------------------------------

    def _on_events_open(self, peer: ViewerPeer) -> None:
        viewer = self._viewer_of(peer)
        if viewer is None:
            return
        viewer.connected.set()
        k = self.kiosk
        hello = channels.Hello(
            viewer_id=viewer.id,
            kiosk=k.name,
            units="F" if k.units == "F" else "C",
            threshold_c=k.threshold_c,
            thermal_box=k.thermal_box,
            last_seq=self.events.newest_seq,
        )
        peer.send_event(channels.encode(hello))
        peer.send_event(channels.encode(self._talk_message(viewer.id)))
        if self._state is not None:
            peer.send_telemetry(channels.encode(_state_message(self._state)))

    def _on_channel_message(self, peer: ViewerPeer, data: str | bytes) -> None:
        viewer = self._viewer_of(peer)
        if viewer is None:
            return
        if not viewer.bucket.take(self.clock()):
            self._problem(viewer, "rate-limited", "too many messages; slow down", None)
            return
        try:
            msg = channels.decode_from_viewer(data)
        except channels.ChannelProtocolError as exc:
            # With the refused message's type when it has one: the page must tell a refused
            # join or chat line from a refused ack.
            self._problem(viewer, exc.code, str(exc)[:300], protocol.message_type(data))
            return
        if isinstance(msg, channels.Join):
            self._join(viewer, msg)
        elif isinstance(msg, channels.Ack):
            viewer.cursor.ack(msg.seq)
        elif not viewer.joined and isinstance(msg, channels.AckAlert | channels.Say | channels.TalkRequest):
            # These act under the viewer's name (an alert's acknowledgement is a record people
            # rely on; the floor and chat lines are shown to everyone by name): join first, not
            # the fallback label. A release (talk false) has no floor to release: ignored.
            if not isinstance(msg, channels.TalkRequest) or msg.active:
                self._problem(viewer, "not-allowed", "send join first", protocol.message_type(data))
        elif isinstance(msg, channels.AckAlert):
            self._ack_alert(viewer, msg.seq)
        elif isinstance(msg, channels.Say):
            self._chat(viewer, msg.text)
        elif isinstance(msg, channels.TalkRequest):
            self._talk(viewer, msg.active)
        elif isinstance(msg, channels.Listen) and peer.audio_track is not None:
            peer.audio_track.listen(msg.on)

    def _problem(self, viewer: Viewer, code: channels.ChannelError, message: str, ref: str | None) -> None:
        viewer.peer.send_event(channels.encode(channels.Problem(code=code, message=message, ref=ref)))

    def _join(self, viewer: Viewer, msg: channels.Join) -> None:
        if viewer.joined:
            self._problem(viewer, "not-allowed", "already joined", "join")
            return
        viewer.joined = True
        viewer.name = channels.clean_text(msg.name, 64) or viewer.label
        viewer.catching_up = True
        self._viewer_task(viewer, self._catch_up_viewer(viewer, msg.last_seq), "events")

    async def _catch_up_viewer(self, viewer: Viewer, last_seq: int | None) -> None:
        """History or what this viewer missed, then whatever arrived live meanwhile."""
        resumed = False  # the cursor starts after last_seq: what it was sent is recorded
        try:
            if last_seq is not None:
                # The store's newest seq (a page's last_seq is its high-water mark, whatever it holds).
                newest = (await self._fetch(EventsSince(seq=last_seq, limit=1))).last_seq
                if last_seq > newest:
                    # Not a seq of this kiosk's store (another kiosk's, kept by the page for
                    # this invite; a bad client): trusted, it hid every event up to it from
                    # this viewer, fever alerts included. Up to date as of its join, then:
                    # what arrived meanwhile (the backlog) is still to be sent.
                    log.info("viewer %s: joined after seq %d; the newest is %d", viewer.id, last_seq, newest)
                    last_seq = min([newest, *(e.seq - 1 for e in viewer.backlog)])
                elif newest - last_seq > CATCH_UP_LIMIT:
                    # Away for long: the newest of what it missed, not the oldest. What someone
                    # opening the page needs is what happened last (an alert a minute ago), and
                    # the live events go on from there.
                    log.info(
                        "viewer %s: %d results behind; replaying the newest %d",
                        viewer.id,
                        newest - last_seq,
                        CATCH_UP_LIMIT,
                    )
                    last_seq = newest - CATCH_UP_LIMIT
            if last_seq is None:
                for event in list(self.events.history):
                    self._deliver(viewer, event, live=False)
                viewer.cursor.sent = self.events.seen.copy()
            else:
                viewer.cursor.start_after(last_seq)
                resumed = True
                async for event in pages(self._fetch, last_seq, self.kiosk.threshold_c):
                    self._deliver(viewer, event, live=False)
        except Exception as exc:
            # The screening daemon is away (or answered what cannot be read): the viewer keeps
            # its call, gets what this publisher holds of what it missed, then live events.
            if isinstance(exc, BusError | TimeoutError):
                log.warning("viewer %s: cannot replay missed events: %s", viewer.id, exc)
            else:
                log.exception("viewer %s: replaying missed events failed", viewer.id)
            if last_seq is not None:
                self._resume_from_history(viewer, last_seq, resumed=resumed)
        finally:
            viewer.catching_up = False
        while viewer.backlog:
            event = viewer.backlog.popleft()
            # As on_event would have sent it: an old event replayed after a bus outage is no alarm.
            self._deliver(viewer, event, live=event.live)

    def _resume_from_history(self, viewer: Viewer, last_seq: int, *, resumed: bool) -> None:
        """The events after last_seq from this publisher's own history (the newest HISTORY),
        for a resume that events_since could not serve. Before this, a viewer resuming while
        the screening daemon restarted lost everything between its last call and its join.
        Sent once: the cursor drops what a page that did arrive had already sent."""
        if not resumed:
            # As for a seq the store never reached: trusted only up to the newest this
            # publisher knows, less what is still queued for this viewer.
            known = min([self.events.newest_seq, *(e.seq - 1 for e in viewer.backlog)])
            last_seq = min(last_seq, known)
            viewer.cursor.start_after(last_seq)
        for event in list(self.events.history):
            if event.seq > last_seq:
                self._deliver(viewer, event, live=False)

    async def _fetch(self, params: EventsSince) -> EventsPage:
        page: EventsPage = await self.bus.request("screening.events_since", params, timeout=5.0)
        return page

    def _deliver(self, viewer: Viewer, event: channels.Event, *, live: bool) -> None:
        if viewer.cursor.take(event):
            viewer.peer.send_event(channels.encode(self.events.annotate(event, live=live)))

    def _ack_alert(self, viewer: Viewer, seq: int) -> None:
        cursor = viewer.cursor
        shown = (seq, "alert.fever") in cursor.sent.keys or (
            # Acknowledged as received, in this call or in an earlier one (its join's last_seq):
            # the page keeps an alert's button across a new call, and a press there counts.
            seq <= cursor.acked and self.events.is_alert(seq)
        )
        if not shown:
            # Only an alert this viewer was shown: alert.ack is a record people rely on.
            self._problem(viewer, "not-allowed", f"no fever alert {seq} was sent to you", "ack-alert")
            return
        now = time.time()
        if not self.events.acknowledge(seq, viewer.label, now):
            return
        log.info("fever alert %d acknowledged by %s", seq, viewer.label)
        self.bus.publish_nowait("alert.ack", AlertAck(seq=seq, by=viewer.label[:64], wall_ts=now))
        self._broadcast_event(channels.encode(channels.AlertAcked(seq=seq, by=viewer.label, wall_ts=now)))

    def _chat(self, viewer: Viewer, text: str) -> None:
        text = channels.clean_text(text, 1000)
        if not text:
            # Control or format characters only: its sender's page shows the line as sent.
            self._problem(viewer, "bad-message", "nothing printable in this chat text", "chat")
            return
        if not viewer.chat_bucket.take(self.clock()):
            self._problem(viewer, "rate-limited", "too many chat lines; wait a moment", "chat")
            return
        now = time.time()
        sender = viewer.label[:64]
        self._echoes.append((sender, text, now))
        self.bus.publish_nowait("call.chat", ChatMessage(sender=sender, text=text, wall_ts=now))
        line = channels.encode(channels.Chat(sender=sender, text=text, wall_ts=now, origin="viewer"))
        for other in self.viewers.values():
            if other is not viewer:
                other.peer.send_event(line)

    def _broadcast_event(self, text: str) -> None:
        for viewer in self.viewers.values():
            viewer.peer.send_event(text)

    # --- push-to-talk -----------------------------------------------------------------------

    def _talk(self, viewer: Viewer, active: bool) -> None:
        if active:
            if self.floor is None:
                self.floor = viewer.id
                self._floor_heard_at = self.clock()
                log.info("%s is talking to the kiosk", viewer.label)
                self._announce_floor()
            elif self.floor != viewer.id:
                viewer.peer.send_event(channels.encode(self._talk_message(viewer.id)))  # refused: busy
        elif self.floor == viewer.id:
            self._release_floor()

    def _release_floor(self) -> None:
        self.floor = None
        self.speaker.idle()
        self._announce_floor()

    def _announce_floor(self) -> None:
        for viewer in self.viewers.values():
            viewer.peer.send_event(channels.encode(self._talk_message(viewer.id)))
        self.publish_state()

    def _talk_message(self, viewer_id: str) -> channels.Talk:
        holder = self.viewers.get(self.floor) if self.floor else None
        return channels.Talk(talker=holder.label if holder else None, you=self.floor == viewer_id)

    def _on_viewer_audio(self, peer: ViewerPeer, frame: av.AudioFrame) -> None:
        if self.floor == peer.viewer_id and self._viewer_of(peer) is not None:
            self._floor_heard_at = self.clock()
            self.speaker.play(frame)

    def _check_floor(self, now: float) -> None:
        if self.floor is not None and now - self._floor_heard_at > FLOOR_SILENCE_S:
            holder = self.viewers.get(self.floor)
            log.info(
                "%s holds the floor but sent no audio for %g s: released",
                holder.label if holder else self.floor,
                FLOOR_SILENCE_S,
            )
            self._release_floor()

    def _on_viewer_video(self, peer: ViewerPeer, frame: av.VideoFrame) -> None:
        if self.remote_video is not None and self._viewer_of(peer) is not None:
            self.remote_video.offer(peer.viewer_id, frame)

    @property
    def talking(self) -> bool:
        return self.floor is not None

    # --- from the bus -----------------------------------------------------------------------

    def on_thermal(self, msg: ThermalFrame) -> None:
        if not self.viewers:
            return
        text = channels.encode(
            channels.Thermal(
                pixels=channels.thermal_pixels(msg.pixels),
                thermistor=round(msg.thermistor, 2),
                frame_seq=msg.frame_seq,
                rate_hz=msg.rate_hz,
            )
        )
        for viewer in self.viewers.values():
            viewer.peer.send_telemetry(text)

    def on_screening_state(self, msg: ScreeningState) -> None:
        self._state = msg
        self._send_state()

    def _send_state(self) -> None:
        if self._state is None:
            return
        self._state_sent_at = self.clock()
        text = channels.encode(_state_message(self._state))
        for viewer in self.viewers.values():
            viewer.peer.send_telemetry(text)

    def on_event(self, event: channels.Event) -> None:
        """A result or alert from the bus (or a bus catch-up): on to every joined viewer."""
        if not self.events.add(event):
            return
        for viewer in self.viewers.values():
            if not viewer.joined:
                continue  # its join will bring it from history or its own catch-up
            if viewer.catching_up:
                viewer.backlog.append(event)
            else:
                self._deliver(viewer, event, live=event.live)

    async def catch_up(self) -> int:
        """Fetch events the publisher itself missed (its bus connection was cut) and pass them on."""
        newest = self.events.newest_seq
        after = max(0, newest - 1)  # the alert of the newest seq may be what was missed
        n = 0
        now = time.time()
        async for event in pages(self._fetch, after, self.kiosk.threshold_c):
            live = newest > 0 and now - event.wall_ts < LIVE_WINDOW_S
            event = msgspec.structs.replace(event, live=live)
            if self.events.add(event):
                n += 1
                for viewer in self.viewers.values():
                    if viewer.joined and not viewer.catching_up:
                        self._deliver(viewer, event, live=live)
                    elif viewer.joined:
                        viewer.backlog.append(event)
        return n

    async def prime(self, history: int) -> None:
        """Learn the newest seq and the last `history` events, for viewers joining fresh."""
        first: EventsPage = await self.bus.request(
            "screening.events_since", EventsSince(seq=0, limit=1), timeout=5.0
        )
        start = max(0, first.last_seq - history)
        async for event in pages(self._fetch, start, self.kiosk.threshold_c):
            self.events.add(event)

    def on_kiosk_chat(self, msg: ChatMessage) -> None:
        key = (msg.sender, msg.text, msg.wall_ts)
        if key in self._echoes:
            return  # a viewer's line we published ourselves
        line = channels.encode(
            channels.Chat(sender=msg.sender, text=msg.text, wall_ts=msg.wall_ts, origin="kiosk")
        )
        self._broadcast_event(line)

    # --- periodic ---------------------------------------------------------------------------

    async def tick(self) -> None:
        now = self.clock()
        self._check_floor(now)
        if now - self._state_sent_at >= STATE_REFRESH_S:
            self._send_state()
        for viewer in list(self.viewers.values()):
            if viewer.connected.is_set():
                await self._read_stats(viewer)
        self.publish_state(force=True)

    async def _read_stats(self, viewer: Viewer) -> None:
        """One viewer's figures for call.state. Whatever goes wrong (its transport closing
        under getStats, a report that cannot be read, a getStats that never returns) costs that
        viewer its figures for this tick -- shown as none rather than its last good ones, which
        would look like a healthy call -- and nothing else: the tick goes on to the others,
        the floor check and call.state."""
        try:
            async with asyncio.timeout(STATS_TIMEOUT_S):
                report = await viewer.peer.stats()
            viewer.stats, viewer.sample = viewer_stats(viewer.id, report, self.clock(), viewer.sample)
        except Exception as exc:
            log.debug("viewer %s: no stats: %s: %s", viewer.id, type(exc).__name__, exc)
            viewer.stats = None
            viewer.sample = None  # a bitrate needs two good samples in a row

    def publish_state(self, *, force: bool = False) -> None:
        state = CallState(
            viewers=[v.stats or ViewerStats(viewer_id=v.id) for v in self.viewers.values()],
            room_connected=self.room_connected,
            talking=self.talking,
        )
        if not force and state == self._published:
            return
        self._published = state
        self.bus.publish_nowait("call.state", state)

    # --- tasks ------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call task %s failed", task.get_name(), exc_info=task.exception())

    def _viewer_task(self, viewer: Viewer, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"viewer-{viewer.id}-{name}")
        viewer.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            viewer.tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                return
            if isinstance(exc, TimeoutError):
                reason = "timed out setting up the call"
            else:
                # One viewer's failure ends that viewer's call, nothing else.
                log.error("viewer %s: %s failed", viewer.id, name, exc_info=exc)
                reason = f"{name} failed"
            if self.viewers.get(viewer.id) is viewer:
                self._signal(protocol.Bye(to=viewer.id))  # its page may ask for a new call
                self.drop(viewer.id, reason)

        task.add_done_callback(done)

    async def close(self) -> None:
        self._closed = True
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        for viewer_id in list(self.viewers):
            self.drop(viewer_id, "the publisher is stopping")
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        with contextlib.suppress(Exception):
            self.speaker.close()
        if self.remote_video is not None:
            self.remote_video.close()

    @property
    def tasks(self) -> int:
        return len(self._tasks) + sum(len(v.tasks) for v in self.viewers.values())


def _state_message(msg: ScreeningState) -> channels.State:
    return channels.State(
        state=msg.state,
        progress=msg.progress,
        result=msg.result,
        estimate_c=msg.estimate_c,
        distance_m=msg.distance_m,
        reason=msg.reason,
    )


def _ref(msg: protocol.Answer | protocol.Ice) -> str:
    return "answer" if isinstance(msg, protocol.Answer) else "ice"
