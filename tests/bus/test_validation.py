"""The broker refuses what does not match topics.py: it tells the offender why and closes it,
while every other client keeps going."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.bus.broker import MAX_TOPIC, Broker
from appliance.bus.client import BusClient
from appliance.bus.framing import PREFIX, encode_frame, encode_payload
from appliance.bus.topics import EchoParams, Scratch, ThermalStatus
from appliance.errors import FrameError

from .helpers import RawClient, wait_until

MakeClient = Callable[..., Awaitable[BusClient]]

GOOD_FRAME = {"pixels": [20.0] * 64, "thermistor": 25.0, "rate_hz": 10.0, "frame_seq": 1}

OFFENCES: list[tuple[str, Callable[[RawClient], Awaitable[None]], str, str]] = [
    (
        "wrong payload type",
        lambda c: c.send("pub", "thermal.frame", {"pixels": "hot", "thermistor": 25.0}),
        "bad-frame",
        "thermal.frame: payload is not a valid ThermalFrame",
    ),
    (
        "value out of bounds",
        lambda c: c.send("pub", "thermal.frame", {**GOOD_FRAME, "thermistor": 500.0}),
        "bad-frame",
        "payload is not a valid ThermalFrame",
    ),
    (
        "unknown field",
        lambda c: c.send("pub", "thermal.status", {"state": "ok", "colour": "blue"}),
        "bad-frame",
        "payload is not a valid ThermalStatus",
    ),
    (
        "unknown topic",
        lambda c: c.send("pub", "thermal.nope", {}),
        "bad-frame",
        "unknown topic 'thermal.nope'",
    ),
    (
        "attachment on a topic that takes none",
        lambda c: c.send("pub", "thermal.frame", GOOD_FRAME, attachment=b"\x00\x01"),
        "bad-frame",
        "thermal.frame takes no attachment",
    ),
    ("serving an unknown method", lambda c: c.send("serve", "thermal.nope"), "bad-frame", "unknown method"),
    (
        "bad request parameters",
        lambda c: c.send("req", "screening.events_since", {"seq": -1}, seq=1),
        "bad-frame",
        "payload is not a valid EventsSince",
    ),
    ("bad hello", lambda c: c.send("hello", "", 42), "bad-frame", "hello: payload is not a valid str"),
    ("bad pattern", lambda c: c.send("sub", "thermal.*.frame"), "bad-frame", "bad subscription pattern"),
    ("long topic", lambda c: c.send("sub", "test." + "x" * MAX_TOPIC), "bad-frame", "topic name of"),
    (
        "malformed envelope",
        lambda c: c.send_bytes(PREFIX.pack(1, 0) + b"\xc0"),
        "bad-frame",
        "malformed envelope",
    ),
    ("bad header length", lambda c: c.send_bytes(PREFIX.pack(0, 0)), "bad-frame", "bad header length 0"),
    (
        "oversized frame",
        lambda c: c.send_bytes(PREFIX.pack(100, 8 * 1024 * 1024)),
        "bad-frame",
        "exceeds the limit",
    ),
]


@pytest.mark.parametrize(
    ("offence", "code", "reason"), [o[1:] for o in OFFENCES], ids=[o[0] for o in OFFENCES]
)
async def test_offender_is_closed_with_the_reason_and_others_keep_receiving(
    broker: Broker,
    sock_path: Path,
    make_client: MakeClient,
    offence: Callable[[RawClient], Awaitable[None]],
    code: str,
    reason: str,
) -> None:
    listener = await make_client("listener")
    sub = listener.subscribe("test.x")
    publisher = await make_client("publisher")
    await publisher.publish("test.x", Scratch(n=1))
    assert (await sub.get(5)).msg == Scratch(n=1)

    bad = await RawClient.connect(sock_path)
    await bad.send("hello", "", "bad")
    await offence(bad)
    info = await bad.closed_with()
    assert info.code == code
    assert reason in info.message
    bad.close()
    assert broker.stats.bad_frames == 1
    await wait_until(lambda: len(broker.clients) == 2, "the offender to be removed")

    await publisher.publish("test.x", Scratch(n=2))
    rx = await sub.get(5)
    assert rx.msg == Scratch(n=2)
    assert listener.reconnects == 0 and publisher.reconnects == 0


async def test_frames_before_the_bad_one_are_still_delivered(
    broker: Broker, sock_path: Path, make_client: MakeClient
) -> None:
    listener = await make_client("listener")
    sub = listener.subscribe("test.x")
    await listener.request("bus.echo", EchoParams(data=b"ping"))  # the subscription is in place
    bad = await RawClient.connect(sock_path)
    good = encode_frame("pub", "test.x", encode_payload({"n": 5}))
    await bad.send_bytes(good + encode_frame("pub", "nope", encode_payload({})))
    assert (await bad.closed_with()).message == "unknown topic 'nope'"
    assert (await sub.get(5)).msg == Scratch(n=5)


async def test_client_refuses_to_send_what_the_broker_would_refuse(
    broker: Broker, make_client: MakeClient
) -> None:
    bus = await make_client()
    with pytest.raises(TypeError, match=r"thermal.status carries ThermalStatus"):
        bus.publish_nowait("thermal.status", Scratch())
    with pytest.raises(FrameError, match=r"unknown topic"):
        bus.publish_nowait("thermal.nope", Scratch())
    with pytest.raises(FrameError, match=r"takes no attachment"):
        bus.publish_nowait("thermal.status", ThermalStatus(state="ok"), attachment=b"x")
    assert bus.connected and broker.stats.bad_frames == 0


async def test_err_frame_seq_0_is_recorded_by_the_client(broker: Broker, make_client: MakeClient) -> None:
    bus = await make_client()
    # A frame the client library would refuse, slipped past it: the broker closes the
    # connection with a reason, the client records it and reconnects.
    assert bus._proto is not None and bus._proto.transport is not None
    bus._proto.transport.write(encode_frame("pub", "thermal.nope", encode_payload({})))
    await wait_until(lambda: bus.reconnects == 1 and bus.connected, "the client to reconnect")
    assert bus.last_error is not None
    assert (bus.last_error.code, bus.last_error.message) == ("bad-frame", "unknown topic 'thermal.nope'")
