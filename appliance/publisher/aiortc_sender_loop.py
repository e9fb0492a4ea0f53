"""aiortc's RTCRtpSender RTP loop, leaner, for the camera's passthrough sender (one per viewer).

Why: with the camera encoding once and the payloads packetised once (video.SharedPacketizer),
what a viewer costs the publisher is sending its ~175 packets a second. aiortc 1.16's
`RTCRtpSender._run_rtp` spends most of that in Python per packet: an RtpPacket and its header
extensions built and serialised, the clock read twice through datetime, and five coroutine
layers down to the socket (RTCDtlsTransport._send_rtp, aioice Connection.send and .sendto,
StunProtocol.send_data, the asyncio transport), one system call per packet. `install()` puts
this loop in its place on one sender (an instance attribute shadowing the method, as
peer.py's keyframe hook does). It sends the same bytes; what it does differently:

- each packet's header comes from a template made with the sender's own HeaderExtensionsMap
  (byte for byte what RtpPacket.serialize makes; the tests compare the two), the clock read
  once per frame: a frame's packets leave in one burst, so they carry one abs-send-time;
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
(6 packets) takes about 35-40 us instead of 75-85 us; in `appliance bench video` the publisher
with four viewers uses about a fifth less CPU. What is left per viewer is SRTP, the system
calls, and aiortc's own per-connection work (RTCP each way every second, ICE consent, timers).

Frames still come from aiortc's own `_next_encoded_frame` (the track, the sender's encoder slot,
its enabled flag), and RTCP, NACK/RTX, keyframe requests and stop() are aiortc's, untouched.

The private parts it relies on: RTCRtpSender's name-mangled attributes in SENDER_ATTRIBUTES,
`_next_encoded_frame`; RTCDtlsTransport's `_state`, `_tx_srtp`, `transport` and its tx counters;
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
import traceback
from functools import partial
from typing import Any

import aiortc
from aiortc import clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, HeaderExtensionsMap, RtpPacket
from aiortc.utils import random32

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
_DTLS_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_DTLS_TX_PACKETS = "_RTCDtlsTransport__tx_packets"

# UDP generic segmentation offload (Linux 4.18+): <linux/udp.h>
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 60_000  # below the 64 KiB a UDP datagram (before segmentation) may hold
GSO_AVAILABLE = sys.platform == "linux"

_LEAD = struct.Struct("!BBH")  # V=2 P X CC, M PT, sequence number
_TS_SSRC = struct.Struct("!LL")


def aiortc_checked() -> bool:
    return ".".join(aiortc.__version__.split(".")[:2]) in CHECKED_AIORTC


def install(sender: RTCRtpSender) -> bool:
    """Run this loop instead of aiortc's for this sender (before its send() starts it)."""
    missing = [a for a in SENDER_ATTRIBUTES if not hasattr(sender, _SENDER + a)]
    if not aiortc_checked() or missing or not hasattr(sender, "_next_encoded_frame"):
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
    keep = history.raw.__setitem__
    out = UdpOut()
    make_packet = template.packet
    pt = codec.payloadType
    assert pt is not None  # send() gives the negotiated codec, payload type and all
    sequence_number = random_sequence_number()
    timestamp_origin = random32()
    try:
        while True:
            if not sender.track:
                await asyncio.sleep(0.02)
                continue
            enc_frame = await sender._next_encoded_frame(codec)
            if enc_frame is None:
                continue

            dtls = sender.transport
            if dtls._state != State.CONNECTED:
                raise ConnectionError("Cannot send encrypted RTP, not connected")
            pair = dtls.transport._connection._nominated.get(1)
            if pair is None:
                raise ConnectionError("Cannot send data, not connected")
            protect = dtls._tx_srtp.protect
            ntp = clock.current_ntp_time()
            timestamp = (timestamp_origin + enc_frame.timestamp) & 0xFFFFFFFF
            tail = template.tail(timestamp, sender._ssrc, ntp)

            payloads = enc_frame.payloads
            last = len(payloads) - 1
            datagrams = []
            octets = 0
            for i, payload in enumerate(payloads):
                packet = make_packet(pt, i == last, sequence_number, tail, payload)
                keep(sequence_number % RTP_HISTORY_SIZE, packet)
                datagrams.append(protect(packet))
                sequence_number = (sequence_number + 1) & 0xFFFF
                octets += len(payload)

            out.use(pair.protocol)
            sent = out.send(datagrams, pair.remote_addr)
            for data in datagrams[sent:]:
                await pair.protocol.send_data(data, pair.remote_addr)

            _count(sender, dtls, ntp, timestamp, octets, datagrams)
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
    setattr(sender, _SENDER + "encoder", None)
    getattr(sender, _SENDER + "rtp_exited").set()


def _count(
    sender: RTCRtpSender,
    dtls: RTCDtlsTransport,
    ntp: int,
    timestamp: int,
    octets: int,
    datagrams: list[bytes],
) -> None:
    """What aiortc counts per packet, for a frame: the sender's (its RTCP sender reports) and the
    DTLS transport's (getStats)."""
    setattr(sender, _SENDER + "ntp_timestamp", ntp)
    setattr(sender, _SENDER + "rtp_timestamp", timestamp)
    setattr(sender, _SENDER + "octet_count", getattr(sender, _SENDER + "octet_count") + octets)
    setattr(sender, _SENDER + "packet_count", getattr(sender, _SENDER + "packet_count") + len(datagrams))
    setattr(dtls, _DTLS_TX_BYTES, getattr(dtls, _DTLS_TX_BYTES) + sum(map(len, datagrams)))
    setattr(dtls, _DTLS_TX_PACKETS, getattr(dtls, _DTLS_TX_PACKETS) + len(datagrams))
