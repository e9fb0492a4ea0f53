"""The passthrough sender's RTP loop (aiortc_sender_loop): the aiortc internals it relies on are
still there, its packets are aiortc's byte for byte, GSO sends the same datagrams, and over a
real connection the viewer gets every packet of a stream it decodes."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc import RTCPeerConnection, clock
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensionsMap, RtpPacket

from appliance.publisher import aiortc_sender_loop as loop_module
from appliance.publisher.aiortc_sender_loop import (
    SENDER_ATTRIBUTES,
    HeaderTemplate,
    History,
    UdpOut,
    install,
    ntp_now,
    transports_known,
)

from .conftest import Camera, Publisher
from .helpers import wait_until
from .room import RoomServer
from .viewer import AiortcViewer

Start = Callable[..., Awaitable[Publisher]]

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def extensions_map(*uris_ids: tuple[str, int]) -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpSendParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=uri) for uri, i in uris_ids]
        )
    )
    return m


# --- the internals it relies on -------------------------------------------------------------------


async def test_this_aiortc_has_what_the_loop_relies_on() -> None:
    assert loop_module.aiortc_checked(), "a new aiortc: check RTCRtpSender._run_rtp against this loop"
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver(VideoStreamTrack(), direction="sendonly").sender
        for name in SENDER_ATTRIBUTES:
            assert hasattr(sender, f"_RTCRtpSender__{name}"), name
        assert isinstance(sender._RTCRtpSender__rtp_history, dict)  # type: ignore[attr-defined]
        dtls = sender.transport
        for name in ("_state", "_tx_srtp", "_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets"):
            assert hasattr(dtls, name), name
        assert transports_known(dtls)
        assert install(sender)
        assert isinstance(sender._run_rtp, partial)
    finally:
        await pc.close()


async def test_another_aiortc_keeps_its_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_module.aiortc, "__version__", "9.0.0")
    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver(VideoStreamTrack(), direction="sendonly").sender
        assert not install(sender)
        assert "_run_rtp" not in vars(sender)
    finally:
        await pc.close()


# --- packets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uris", "mid"),
    [
        ([(MID, 1), (ABS_SEND_TIME, 3)], "0"),
        ([(ABS_SEND_TIME, 2), (MID, 9)], "video"),
        ([(MID, 4)], "1"),
        ([(ABS_SEND_TIME, 14)], None),
        ([], None),
    ],
)
def test_packets_are_what_aiortc_serialises(uris: list[tuple[str, int]], mid: str | None) -> None:
    ext_map = extensions_map(*uris)
    template = HeaderTemplate.make(ext_map, mid)
    assert template is not None
    payload = os.urandom(1200)
    for seq, timestamp, ntp, marker in [
        (0, 0, 0, False),
        (65535, 0xFFFFFFFF, 0xFFFF_FFFF_FFFF_FFFF, True),
        (12345, 987654321, 0xE8A1_2345_6789_ABCD, False),
    ]:
        ssrc = 0x89ABCDEF
        ours = template.packet(102, marker, seq, template.tail(timestamp, ssrc, ntp), payload)
        # What aiortc's _run_rtp makes of the same packet.
        packet = RtpPacket(payload_type=102, sequence_number=seq, timestamp=timestamp)
        packet.ssrc = ssrc
        packet.payload = payload
        packet.marker = int(marker)
        packet.extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
        packet.extensions.mid = mid
        assert ours == packet.serialize(ext_map)


def test_the_history_parses_a_packet_back_for_a_nack() -> None:
    ext_map = extensions_map((MID, 1), (ABS_SEND_TIME, 3))
    template = HeaderTemplate.make(ext_map, "0")
    assert template is not None
    history = History(ext_map)
    raw = template.packet(102, True, 40000, template.tail(123456, 42, 0xE8A1_2345_6789_ABCD), b"payload")
    history.raw[40000 % RTP_HISTORY_SIZE] = raw
    packet = history.get(40000 % RTP_HISTORY_SIZE)
    assert packet is not None
    assert (packet.sequence_number, packet.timestamp, packet.ssrc, packet.marker) == (40000, 123456, 42, 1)
    assert packet.payload == b"payload" and packet.extensions.mid == "0"
    assert packet.serialize(ext_map) == raw  # what aiortc's _retransmit serialises again
    assert history.get(1) is None


def test_the_ntp_clock_is_aiortcs() -> None:
    # The sender reports carry ntp_now(); aiortc computes round-trip times from its own clock.
    ours, theirs = ntp_now(), clock.current_ntp_time()
    assert abs(theirs - ours) < (1 << 32) // 100  # 10 ms apart at most: the same wall clock
    assert (ours >> 32) - 2_208_988_800 == pytest.approx(time.time(), abs=1)


# --- sending --------------------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.addr = self.sock.getsockname()

    def receive(self, n: int) -> list[bytes]:
        return [self.sock.recv(65536) for _ in range(n)]


async def udp_protocol() -> Any:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    return SimpleNamespace(transport=transport)


def frame(sizes: list[int]) -> list[bytes]:
    return [bytes([i]) * size for i, size in enumerate(sizes)]


async def test_a_frames_datagrams_arrive_as_they_were() -> None:
    sink, protocol = Sink(), await udp_protocol()
    out = UdpOut()
    try:
        out.use(protocol)
        assert out.sock is not None
        # FU-A fragments: a few one byte longer, then the rest; then a single, then many.
        frames = [frame([1311] * 3 + [1310] * 4), frame([700]), frame([1300] * 70 + [20])]
        for datagrams in frames:
            assert out.send(datagrams, sink.addr) == len(datagrams)
            assert sink.receive(len(datagrams)) == datagrams
        assert out.gso == loop_module.GSO_AVAILABLE  # nothing refused it here
    finally:
        out.close()
        protocol.transport.close()
        sink.sock.close()


async def test_a_refused_gso_falls_back_to_one_datagram_a_call() -> None:
    sink, protocol = Sink(), await udp_protocol()
    out = UdpOut()

    class NoGso:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def sendmsg(self, *args: Any) -> int:
            raise OSError(5, "Input/output error")  # what a device without checksum offload gives

        def sendto(self, data: bytes, addr: Any) -> int:
            return self.sock.sendto(data, addr)

        def close(self) -> None:
            self.sock.close()

    try:
        out.use(protocol)
        assert out.sock is not None
        out.sock = NoGso(out.sock)  # type: ignore[assignment]
        out.gso = True
        datagrams = frame([1311, 1311, 1310, 1310])
        assert out.send(datagrams, sink.addr) == 4
        assert sink.receive(4) == datagrams
        assert not out.gso
    finally:
        out.close()
        protocol.transport.close()
        sink.sock.close()


async def test_datagrams_queued_in_the_transport_keep_their_place() -> None:
    protocol = await udp_protocol()
    out = UdpOut()
    try:
        out.use(protocol)
        protocol.transport._buffer.append((b"queued", ("127.0.0.1", 9)))  # as after an EAGAIN
        protocol.transport._buffer_size += 6
        assert out.send(frame([100, 100]), ("127.0.0.1", 9)) == 0  # all through the transport
        protocol.transport._buffer.clear()
        protocol.transport._buffer_size = 0
    finally:
        out.close()
        protocol.transport.close()


def test_a_relay_without_a_socket_sends_through_its_transport() -> None:
    turn = SimpleNamespace(transport=SimpleNamespace(get_extra_info=lambda name, default=None: default))
    out = UdpOut()
    out.use(turn)
    assert out.sock is None and out.send(frame([100]), ("192.0.2.1", 3478)) == 0


# --- over a real connection -----------------------------------------------------------------------


@pytest.mark.parametrize("way", ["socket", "transport"])
async def test_a_viewer_gets_every_packet_and_nacks_are_answered(
    camera: Camera, start_publisher: Start, room: RoomServer, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    if way == "transport":
        # As through a TURN relay (no socket of its own): every frame's datagrams are left by
        # the track's sink for the loop to await, and the frames offered meanwhile queue.
        monkeypatch.setattr(UdpOut, "send", lambda self, datagrams, addr: 0)
    pub = await start_publisher()
    viewer = AiortcViewer(room.url)
    try:
        await viewer.connect()
        await viewer.wait_for(lambda: len(viewer.got.video) >= 20, "video frames", 15)
        peer = pub.call.viewers[viewer.peer_id].peer
        sender = next(s for s in peer.pc.getSenders() if s.kind == "video")
        assert isinstance(sender._run_rtp, partial) and sender._run_rtp.func is loop_module._run_rtp
        # Between frames the loop waits in push(), its sink in the track (no pulls, no wake-ups).
        await wait_until(lambda: sender.track._sink is not None, "the sink in place", 2)
        history = sender._RTCRtpSender__rtp_history
        assert isinstance(history, History) and history.raw

        # The viewer's own count: every packet arrived, or came again when the viewer asked. On a
        # loaded machine a datagram can still be lost on loopback (a receive buffer full); the
        # viewer's NACK then brings it back as RTX, which aiortc counts on a stream of its own
        # (the RTX SSRC) before unwrapping it: the media stream shows it as lost. (Read from the
        # receiver: aiortc's getStats gives one entry per receiver, the last stream's, so after a
        # retransmission it shows the RTX stream's count instead of the media's.)
        assert viewer.pc is not None
        await asyncio.sleep(2.5)  # a receiver report or two
        [streams] = [
            dict(t.receiver._RTCRtpReceiver__remote_streams)
            for t in viewer.pc.getTransceivers()
            if sender._ssrc in t.receiver._RTCRtpReceiver__remote_streams
        ]
        assert set(streams) <= {sender._ssrc, sender._rtx_ssrc}, streams
        media = streams[sender._ssrc]
        resent = streams[sender._rtx_ssrc].packets_received if sender._rtx_ssrc in streams else 0
        sent = sender._RTCRtpSender__packet_count
        # A datagram or two lost to a busy machine, not a sender that drops them (one a frame
        # is more than 30 here).
        assert media.packets_received > 30 and media.packets_lost <= resent <= 3, (media.packets_lost, resent)
        assert sent - 30 < media.packets_received + resent and media.packets_received <= sent, (sent, resent)

        # Our stats: the transport's bytes and the viewer's reports on our stream.
        report = await peer.stats()
        transport = next(s for s in report.values() if s.type == "transport")
        assert transport.bytesSent > 0 and transport.packetsSent >= media.packets_received
        # (The viewer's report on the media stream: a packet that came again by RTX is lost there.)
        remote = [s for s in report.values() if s.type == "remote-inbound-rtp" and s.kind == "video"]
        assert remote and remote[0].packetsLost <= resent, remote

        # A NACK: aiortc's _retransmit finds the packet in the history and sends it as RTX.
        # The newest: one far behind would throw the viewer's jitter buffer back.
        dtls = sender.transport
        before = dtls._RTCDtlsTransport__tx_packets
        seqs = {p.sequence_number for k in list(history.raw) if (p := history.get(k)) is not None}
        [newest] = [q for q in seqs if (q + 1) & 0xFFFF not in seqs]
        await sender._retransmit(newest)
        assert dtls._RTCDtlsTransport__tx_packets == before + 1

        frames = len(viewer.got.video)
        await viewer.wait_for(lambda: len(viewer.got.video) > frames + 5, "video still flowing", 5)
    finally:
        await viewer.close()
    # The loop ends with the call (test_leaks counts descriptors over many calls).
    await wait_until(lambda: not pub.call.viewers, "the call closed")
    assert sender._RTCRtpSender__rtp_exited.is_set()
