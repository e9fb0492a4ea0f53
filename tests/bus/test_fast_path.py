"""The fast paths for published frames (BusClient._fast_frames, Broker.fast_publish) against
the general decoder: the same messages, in the same order, however the stream is cut into
reads, with other kinds, bad frames and long topics mixed in.

Both sides run in-process: a BusClient's protocol fed by hand, and a Broker whose connections
have a transport that records what would be written.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.bus.broker import Broker, Connection
from appliance.bus.client import BusClient, Received, _Protocol
from appliance.bus.framing import ErrorInfo, FrameDecoder, encode_frame, encode_payload, encode_pub
from appliance.bus.topics import Scratch

LONG = "test.a_topic_longer_than_thirty_one_bytes"  # past a fixstr: the general path's


def pub(topic: str, n: int, attachment: bytes | None = None) -> bytes:
    return encode_frame("pub", topic, encode_payload(Scratch(data=b"x" * (n % 7), n=n)), seq=n, ts=n / 10,
                        attachment=attachment)  # fmt: skip


def stream() -> tuple[bytes, list[tuple[str, int, bytes | None]]]:
    """Frames of several kinds and what a subscriber of test.* should get from them, in order."""
    frames: list[bytes] = []
    expected: list[tuple[str, int, bytes | None]] = []
    for n in range(40):
        topic = (LONG, "test.state.s", "test.a")[n % 3] if n % 5 else "test.b"
        att = bytes([n]) * (n % 4) if n % 4 else None
        frames.append(pub(topic, n, att))
        expected.append((topic, n, att))
        if n % 9 == 4:  # a reply nobody waits for: ignored, in the middle of the pubs
            frames.append(encode_frame("rep", "test.echo", encode_payload(Scratch()), seq=999))
        if n % 11 == 6:  # not subscribed to: skipped
            frames.append(encode_frame("pub", "health.nobody", encode_payload(Scratch(n=n))))
    return b"".join(frames), expected


def cuts(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        out.append(data[pos : pos + size])
        pos += size
        i += 1
    return out


def received(reads: list[bytes]) -> list[tuple[str, int, bytes | None]]:
    async def run() -> list[Received]:
        client = BusClient("/nonexistent/bus.sock", "fast-path")
        sub = client.subscribe("test.*", maxsize=10_000)
        proto = _Protocol(client)
        for data in reads:
            proto.data_received(data)
        assert proto.decoder.error is None
        return list(sub.queue)

    return [(rx.topic, rx.msg.n, rx.attachment) for rx in asyncio.run(run())]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 700), max_size=6))
def test_the_client_gets_every_message_in_order_however_the_reads_fall(sizes: list[int]) -> None:
    data, expected = stream()
    assert received(cuts(data, sizes)) == expected


def test_the_client_gets_them_byte_by_byte_too() -> None:
    data, expected = stream()
    assert received([data[i : i + 1] for i in range(len(data))]) == expected


def test_a_bad_payload_in_a_read_is_dropped_and_the_rest_delivered(caplog: pytest.LogCaptureFixture) -> None:
    bad = encode_frame("pub", "test.a", msgspec.msgpack.encode({"n": "not a number"}), seq=7)
    data = pub("test.a", 1) + bad + pub("test.a", 2)
    with caplog.at_level(logging.WARNING):
        assert received([data]) == [("test.a", 1, None), ("test.a", 2, None)]
    assert "dropping invalid test.a message" in caplog.text


# --- the broker ----------------------------------------------------------------------------------


class Recorder(asyncio.Transport):
    """A transport that keeps what the broker writes, as the socket would get it."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.data += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.data += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


def connection(broker: Broker, patterns: list[str]) -> tuple[Connection, Recorder]:
    conn = Connection(broker)
    transport = Recorder()
    conn.transport = transport
    conn.patterns = list(patterns)
    broker.add(conn)
    return conn, transport


def forwarded(reads: list[bytes]) -> tuple[bytes, bool]:
    """What a subscriber of test.* gets when a publisher's stream arrives in these reads, and
    whether the publisher was cut off."""
    broker = Broker()
    publisher, _ = connection(broker, [])
    _, got = connection(broker, ["test.*"])
    for data in reads:
        publisher.data_received(data)
    return bytes(got.data), publisher.closed


def pubs_only() -> bytes:
    """The test.* pubs of stream(): what a publisher sends the broker (the rep and the
    health.* frame with a Scratch payload would be refused)."""
    data, _ = stream()
    frames = [f for f in FrameDecoder().feed(data) if f.env.kind == "pub" and f.env.topic.startswith("test.")]
    return b"".join(bytes(f.raw) for f in frames if f.raw is not None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 700), max_size=6))
def test_the_broker_forwards_the_same_bytes_however_the_reads_fall(sizes: list[int]) -> None:
    data = pubs_only()
    assert forwarded([data]) == (data, False)  # every frame, byte for byte
    assert forwarded(cuts(data, sizes)) == (data, False)


def test_a_bad_frame_after_good_ones_forwards_them_and_cuts_the_publisher_off() -> None:
    bad = encode_frame("pub", "test.a", msgspec.msgpack.encode({"n": "not a number"}), seq=7)
    good = pub("test.a", 1) + pub("test.b", 2)
    for reads in ([good + bad + pub("test.a", 3)], [good[:5], good[5:] + bad[:3], bad[3:]]):
        got, closed = forwarded(reads)
        assert closed
        assert [f.env.seq for f in FrameDecoder().feed(got)] == [1, 2]


def test_an_attachment_the_topic_does_not_take_is_refused_with_its_reason() -> None:
    broker = Broker()
    publisher, sent_back = connection(broker, [])
    publisher.data_received(encode_frame("pub", "call.chat", encode_payload({}), attachment=b"x"))
    assert publisher.closed
    [err] = FrameDecoder().feed(bytes(sent_back.data))
    info = msgspec.msgpack.decode(err.env.payload, type=ErrorInfo)
    assert info.code == "bad-frame" and "takes no attachment" in info.message


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=40),
    st.integers(0, 2**63 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=50),
    st.one_of(st.none(), st.binary(max_size=20)),
)
def test_encode_pub_writes_what_encode_frame_writes(
    topic: str, seq: int, ts: float, data: bytes, attachment: bytes | None
) -> None:
    msg = Scratch(data=data, n=seq % 1000)
    assert encode_pub(topic, msg, seq=seq, ts=ts, attachment=attachment) == encode_frame(
        "pub", topic, encode_payload(msg), seq=seq, ts=ts, attachment=attachment
    )
