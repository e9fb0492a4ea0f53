"""aiortc's RTCRtpSender RTP loop, leaner, for the camera's passthrough sender (one per viewer).

Why: with the camera encoding once and the payloads packetised once (video.SharedPacketizer),
what a viewer costs the publisher is sending its ~175 packets a second. aiortc 1.16's
`RTCRtpSender._run_rtp` spends most of that in Python per packet: an RtpPacket and its header
extensions built and serialised, the clock read twice through datetime, and five coroutine
layers down to the socket (RTCDtlsTransport._send_rtp, aioice Connection.send and .sendto,
StunProtocol.send_data, the asyncio transport), one system call per packet. `install()` puts
this loop in its place on one sender (an instance attribute shadowing the method, as
peer.py's keyframe hook does). It sends the same bytes; what it does differently:

- frames are pushed, not pulled: while the loop waits in the track's push() (packettrack.py),
  the feed hands each access unit to this sender's `FrameSender.sink` inside its own call, so
  a frame reaches all the viewers in one pass on the event loop instead of waking one task per
  viewer through aiortc's `_next_encoded_frame`. The sink sends what the socket takes at once;
  anything else (a TURN relay's transport to await, a failure) it leaves to the loop and
  releases the track, whose later frames then queue and are pulled as before;
- each packet's header comes from a template made with the sender's own HeaderExtensionsMap
  (byte for byte what RtpPacket.serialize makes; the tests compare the two), the clock read
  once per frame and without datetime (`ntp_now`): a frame's packets leave in one burst, so
  they carry one abs-send-time;
- SRTP with the DTLS transport's session, and the datagrams go straight to the nominated ICE
  pair's socket; the DTLS transport's counters (getStats' bytesSent) are kept as it keeps them;
- on Linux, packets of one size leave in one sendmsg with UDP_SEGMENT (GSO): the kernel cuts
  the buffer into the same datagrams, for a fraction of the cost of one call each (a NAL unit's
  FU-A fragments are all of one size but the last: video.FullFragments). A kernel or
  path that refuses it (an old kernel, a device without checksum offload, a small MTU) turns
  GSO off for that sender, which then sends datagram by datagram;
- the NACK history holds each packet's bytes and parses one back into an RtpPacket only when a
  NACK asks for it (aiortc's `_retransmit` then wraps and sends it as before);
- the counters for the RTCP sender reports are updated once per frame, not per packet.

Measured on the bench machine (2 shared cores): in a tight loop, one viewer's 7 KB P-frame
(6 packets) takes about 35-40 us instead of 75-85 us. What is left per viewer is SRTP, the
system calls, and aiortc's own per-connection work (RTCP each way every second, ICE consent,
timers).

A track that is not a PacketTrack is pulled through aiortc's own `_next_encoded_frame`, and
what the sink does with a packet is what that method does after the track (the sender's
enabled flag, its encoder slot's pack()). RTCP, NACK/RTX, keyframe requests and stop() are
aiortc's, untouched.

The private parts it relies on: RTCRtpSender's name-mangled attributes in SENDER_ATTRIBUTES,
`_next_encoded_frame`, `_enabled`; RTCDtlsTransport's `_state`, `_tx_srtp`, `transport` and its tx counters;
RTCIceTransport's aioice `_connection._nominated`. `install()` refuses (aiortc's own loop then
runs: slower, still correct) for an aiortc version it was not checked against or a sender
without those attributes, and a loop that finds the transports different at its start falls
back to aiortc's loop too. tests/publisher/test_aiortc_sender_loop.py fails if any of this
changes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import time
import traceback
from functools import partial
from typing import Any

import aiortc
import av
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, HeaderExtensionsMap, RtpPacket
from aiortc.utils import random32

from appliance.publisher.packettrack import PacketTrack
from appliance.publisher.srtp_batch import Protector

log = logging.getLogger(__name__)

CHECKED_AIORTC = ("1.16",)  # major.minor versions whose RTCRtpSender._run_rtp this mirrors
_SENDER = "_RTCRtpSender__"
SENDER_ATTRIBUTES = (
    "rtp_started",
    "rtp_exited",
    "rtp_header_extensions_map",
    "mid",
    "rtp_history",
    "track",
    "encoder",
    "ntp_timestamp",
    "rtp_timestamp",
    "octet_count",
    "packet_count",
)
_ENCODER = _SENDER + "encoder"
_DTLS_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_DTLS_TX_PACKETS = "_RTCDtlsTransport__tx_packets"

# UDP generic segmentation offload (Linux 4.18+): <linux/udp.h>
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 60_000  # below the 64 KiB a UDP datagram (before segmentation) may hold
GSO_AVAILABLE = sys.platform == "linux"

_NTP_1970 = 2_208_988_800  # seconds from the NTP epoch (1900) to the Unix epoch
_LEAD = struct.Struct("!BBH")  # V=2 P X CC, M PT, sequence number
_TS_SSRC = struct.Struct("!LL")


def ntp_now() -> int:
    """The wall clock as a 64-bit NTP timestamp: aiortc's clock.current_ntp_time() (which the
    RTCP side still uses: the two must agree), without its several datetime objects."""
    seconds, ns = divmod(time.time_ns(), 1_000_000_000)
    return ((seconds + _NTP_1970) << 32) | ((ns << 32) // 1_000_000_000)


def aiortc_checked() -> bool:
    return ".".join(aiortc.__version__.split(".")[:2]) in CHECKED_AIORTC


def install(sender: RTCRtpSender) -> bool:
    """Run this loop instead of aiortc's for this sender (before its send() starts it)."""
    missing = [a for a in SENDER_ATTRIBUTES if not hasattr(sender, _SENDER + a)]
    if (
        not aiortc_checked()
        or missing
        or not hasattr(sender, "_next_encoded_frame")
        or not hasattr(sender, "_enabled")
    ):
        log.warning(
            "aiortc %s: not the RTCRtpSender this loop was written for (missing: %s); its own loop runs",
            aiortc.__version__,
            ", ".join(missing) or "-",
        )
        return False
    sender._run_rtp = partial(_run_rtp, sender)  # type: ignore[method-assign]
    return True


class History:
    """Stands in for the sender's NACK history (seq % RTP_HISTORY_SIZE -> RtpPacket): keeps the
    packets' bytes, and parses one only for a retransmission (aiortc reads it with get())."""

    __slots__ = ("_map", "raw")

    def __init__(self, extensions_map: HeaderExtensionsMap) -> None:
        self.raw: dict[int, bytes] = {}
        self._map = extensions_map

    def get(self, key: int, default: RtpPacket | None = None) -> RtpPacket | None:
        raw = self.raw.get(key)
        return default if raw is None else RtpPacket.parse(raw, self._map)


class HeaderTemplate:
    """One sender's RTP headers: what RtpPacket.serialize(extensions_map) writes for the packets
    aiortc's loop makes (mid and abs-send-time extensions), byte for byte, from a template."""

    __slots__ = ("after", "before", "first", "has_abs")

    def __init__(self, before: bytes, after: bytes, has_abs: bool) -> None:
        self.first = 0x90 if before else 0x80  # version 2, no padding, extension bit, no CSRC
        self.before = before  # the extension block (its 4-byte head first) up to abs-send-time
        self.after = after
        self.has_abs = has_abs

    @classmethod
    def make(cls, extensions_map: HeaderExtensionsMap, mid: str | None) -> HeaderTemplate | None:
        """From aiortc's own extension writer; None for a layout this loop does not know."""

        def block(abs_send_time: int) -> tuple[int, bytes]:
            ext = HeaderExtensions()
            ext.mid = mid
            ext.abs_send_time = abs_send_time
            return extensions_map.set(ext)

        (profile, zeros), (_, ones), (_, probe) = block(0), block(0xFFFFFF), block(0x123456)
        if not zeros:
            return cls(b"", b"", False)
        if len(ones) != len(zeros):
            return None
        head = struct.pack("!HH", profile, len(zeros) >> 2)
        at = [i for i, (a, b) in enumerate(zip(zeros, ones, strict=True)) if a != b]
        if not at:  # abs-send-time not negotiated
            return cls(head + zeros, b"", False) if probe == zeros else None
        k = at[0]
        if at != [k, k + 1, k + 2] or probe != zeros[:k] + b"\x12\x34\x56" + zeros[k + 3 :]:
            return None
        return cls(head + zeros[:k], zeros[k + 3 :], True)

    def tail(self, timestamp: int, ssrc: int, ntp: int) -> bytes:
        """Byte 4 on of the headers of one frame's packets: timestamp, SSRC, extensions, with
        abs-send-time from `ntp` as aiortc computes it."""
        tail = _TS_SSRC.pack(timestamp, ssrc) + self.before
        if self.has_abs:
            tail += ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big") + self.after
        return tail

    def packet(
        self, payload_type: int, marker: bool, sequence_number: int, tail: bytes, payload: bytes
    ) -> bytes:
        lead = _LEAD.pack(self.first, payload_type | 0x80 if marker else payload_type, sequence_number)
        return b"".join((lead, tail, payload))


def transports_known(dtls: RTCDtlsTransport) -> bool:
    """The DTLS and ICE transports have the parts this loop sends through."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    return all(
        hasattr(dtls, a) for a in ("_state", "_tx_srtp", _DTLS_TX_BYTES, _DTLS_TX_PACKETS)
    ) and isinstance(getattr(connection, "_nominated", None), dict)


class UdpOut:
    """The nominated ICE pair's UDP socket (a duplicate of its descriptor, closed with the loop):
    a frame's datagrams in as few system calls as the kernel takes."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.sock: socket.socket | None = None
        self.gso = GSO_AVAILABLE

    def use(self, protocol: Any) -> None:
        if protocol is self.protocol:
            return
        self.close()
        self.protocol = protocol
        transport = protocol.transport
        info = transport.get_extra_info("socket") if transport is not None else None
        # A TURN relay's transport has no socket of its own: everything goes through it.
        if info is not None and getattr(info, "type", None) == socket.SOCK_DGRAM:
            try:
                self.sock = info.dup()
            except OSError as exc:  # out of descriptors: the transport sends it all
                log.warning("no descriptor for the viewer's socket: %s", exc)

    def send(self, datagrams: list[bytes], addr: Any) -> int:
        """Send from the first datagram on; returns how many went (the rest: the transport's)."""
        sock = self.sock
        if sock is None or self.protocol.transport.get_write_buffer_size():
            return 0  # keep the order behind what the transport has queued
        n = len(datagrams)
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            if self.gso:
                # One size, then at most one shorter datagram: how the kernel segments.
                limit = min(n, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit and len(datagrams[j]) == size:
                    j += 1
                if j < limit and len(datagrams[j]) < size:
                    j += 1
            try:
                if j - i == 1:
                    sock.sendto(datagrams[i], addr)
                else:
                    segment = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
                    sock.sendmsg([b"".join(datagrams[i:j])], segment, 0, addr)
            except (BlockingIOError, InterruptedError):
                return i
            except OSError as exc:
                if j - i == 1:
                    return i  # the transport sends it and reports the error as for any datagram
                self.gso = False
                log.info("UDP segmentation offload refused (%s): sending datagram by datagram", exc)
                continue
            i = j
        return n

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.protocol = None


class FrameSender:
    """One sender's RTP state and its way out: a frame's payloads in, SRTP datagrams out on the
    nominated ICE pair. Its `sink` is what a PacketTrack pushes the camera's packets into."""

    def __init__(
        self, sender: RTCRtpSender, codec: RTCRtpCodecParameters, template: HeaderTemplate, history: History
    ) -> None:
        assert codec.payloadType is not None  # send() gives the negotiated codec, payload type and all
        self.sender = sender
        self.codec = codec
        self.payload_type = codec.payloadType
        self.template = template
        self.keep = history.raw.__setitem__
        self.out = UdpOut()
        self.sequence_number = random_sequence_number()
        self.timestamp_origin = random32()
        self.track: PacketTrack | None = None  # the track that pushes into `sink`
        self.pending: tuple[Any, list[bytes]] | None = None  # what the sink left for the loop
        self.failure: Exception | None = None  # what stopped the sink, raised by the loop
        self._pair: Any = None
        self._addr: Any = None
        self._protector: Protector | None = None  # for the DTLS transport's SRTP session

    def sink(self, packet: av.Packet) -> None:
        """One packet from the track, sent now, inside the feed's call. Anything it cannot do
        at once goes back to the loop: leftover datagrams to await, a failure to end on."""
        track = self.track
        assert track is not None
        try:
            if self.sender.track is not track:  # replaced: the loop turns to the new one
                track.release()
                return
            frame = self.encode(packet)
            if frame is None:
                return
            pair, datagrams = self.datagrams(*frame)
            sent = self.send_now(pair, datagrams)
            if sent < len(datagrams):
                self.pending = (pair, datagrams[sent:])
                track.release()
        except Exception as exc:
            self.failure = exc
            track.release()

    def encode(self, packet: av.Packet) -> tuple[list[bytes], int] | None:
        """What aiortc's _next_encoded_frame does with a packet once the track gave it."""
        sender = self.sender
        if not sender._enabled:
            return None
        encoder = getattr(sender, _ENCODER)
        if encoder is None:
            encoder = get_encoder(self.codec)
            setattr(sender, _ENCODER, encoder)
        payloads, timestamp = encoder.pack(packet)
        return (payloads, timestamp) if payloads else None

    def datagrams(self, payloads: list[bytes], timestamp: int) -> tuple[Any, list[bytes]]:
        """A frame's packets, numbered, kept for NACKs, protected and counted; and the pair to
        send them on. ConnectionError, as aiortc's loop, once the transports are down."""
        sender = self.sender
        dtls = sender.transport
        if dtls._state != State.CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        protector = self._protector
        if protector is None or protector.session is not dtls._tx_srtp:
            protector = self._protector = Protector(dtls._tx_srtp)
        make_packet = self.template.packet
        keep = self.keep
        pt = self.payload_type
        ntp = ntp_now()
        timestamp = (self.timestamp_origin + timestamp) & 0xFFFFFFFF
        tail = self.template.tail(timestamp, sender._ssrc, ntp)
        sequence_number = self.sequence_number
        last = len(payloads) - 1
        packets = []
        for i, payload in enumerate(payloads):
            packet = make_packet(pt, i == last, sequence_number, tail, payload)
            keep(sequence_number % RTP_HISTORY_SIZE, packet)
            packets.append(packet)
            sequence_number = (sequence_number + 1) & 0xFFFF
        self.sequence_number = sequence_number
        datagrams = protector.protect_all(packets)
        _count(sender, dtls, ntp, timestamp, sum(map(len, payloads)), datagrams)
        return pair, datagrams

    def send_now(self, pair: Any, datagrams: list[bytes]) -> int:
        """As many of the datagrams as the socket takes now, in order; how many went."""
        if pair is not self._pair:
            self._pair, self._addr = pair, pair.remote_addr
            self.out.use(pair.protocol)
        return self.out.send(datagrams, self._addr)

    async def send_rest(self, pair: Any, datagrams: list[bytes]) -> None:
        """The rest, through the pair's transport (a TURN relay's included), one by one."""
        for data in datagrams:
            await pair.protocol.send_data(data, pair.remote_addr)

    def close(self) -> None:
        self.out.close()
        self.track = None


async def _run_rtp(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
    extensions_map: HeaderExtensionsMap = getattr(sender, _SENDER + "rtp_header_extensions_map")
    template = HeaderTemplate.make(extensions_map, getattr(sender, _SENDER + "mid"))
    if template is None or not transports_known(sender.transport):
        log.warning("not the RTP header extensions or transports expected: aiortc's own RTP loop runs")
        await RTCRtpSender._run_rtp(sender, codec)
        return
    getattr(sender, _SENDER + "rtp_started").set()
    history = History(extensions_map)
    setattr(sender, _SENDER + "rtp_history", history)
    out = FrameSender(sender, codec, template, history)
    try:
        while True:
            if out.pending is not None:
                pair, rest = out.pending
                out.pending = None
                await out.send_rest(pair, rest)
            if out.failure is not None:
                raise out.failure
            track = sender.track
            if not track:
                await asyncio.sleep(0.02)
                continue
            frame: tuple[list[bytes], int] | None
            if isinstance(track, PacketTrack):
                # Frames arrive through out.sink while this waits; it returns for what the
                # sink left to do, or with a packet queued while the loop was busy.
                out.track = track
                packet = await track.push(out.sink)
                frame = None if packet is None else out.encode(packet)
            else:
                enc_frame = await sender._next_encoded_frame(codec)
                frame = None if enc_frame is None else (enc_frame.payloads, enc_frame.timestamp)
            if frame is None:
                continue
            pair, datagrams = out.datagrams(*frame)
            sent = out.send_now(pair, datagrams)
            if sent < len(datagrams):
                await out.send_rest(pair, datagrams[sent:])
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        # As aiortc: the loop must reach its end, or stop() would wait for it forever.
        log.warning("RTCRtpSender(%s) %s", sender.kind, traceback.format_exc())
    finally:
        out.close()

    track = sender.track
    if track:
        track.stop()
        setattr(sender, _SENDER + "track", None)
    setattr(sender, _ENCODER, None)
    getattr(sender, _SENDER + "rtp_exited").set()


def _count(
    sender: Any,
    dtls: Any,
    ntp: int,
    timestamp: int,
    octets: int,
    datagrams: list[bytes],
) -> None:
    """What aiortc counts per packet, for a frame: the sender's (its RTCP sender reports) and the
    DTLS transport's (getStats). (The name-mangled attributes, spelt out: outside their class
    they are plain names, and a plain attribute access is cheaper than getattr/setattr.)"""
    sender._RTCRtpSender__ntp_timestamp = ntp
    sender._RTCRtpSender__rtp_timestamp = timestamp
    sender._RTCRtpSender__octet_count += octets
    sender._RTCRtpSender__packet_count += len(datagrams)
    dtls._RTCDtlsTransport__tx_bytes += sum(map(len, datagrams))
    dtls._RTCDtlsTransport__tx_packets += len(datagrams)
