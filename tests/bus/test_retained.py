"""State topics are retained: a late subscriber gets the latest value at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient, Received, Subscription
from appliance.bus.topics import EchoParams, Health, Scratch, ScreeningState, ThermalStatus

MakeClient = Callable[..., Awaitable[BusClient]]


async def settle(bus: BusClient) -> None:
    """A round trip through the broker: everything this client sent before has been handled."""
    await bus.request("bus.echo", EchoParams())


async def drain(sub: Subscription, bus: BusClient) -> list[Received]:
    """What the subscription holds once a round trip proves the broker sent all it had."""
    await settle(bus)
    out = []
    while sub.queue:
        out.append(await sub.get(1))
    return out


async def test_late_subscriber_gets_the_latest_state_at_once(broker: Broker, make_client: MakeClient) -> None:
    pub = await make_client("thermal")
    for state in ("warming-up", "fault", "ok"):
        await pub.publish("thermal.status", ThermalStatus(state=state))
    await settle(pub)

    late = await make_client("screen")
    rx = await late.subscribe("thermal.status").get(5)
    assert rx.topic == "thermal.status"
    assert rx.msg == ThermalStatus(state="ok")
    assert rx.seq == 3


async def test_retained_per_topic_and_by_prefix(broker: Broker, make_client: MakeClient) -> None:
    pub = await make_client("several")
    await pub.publish("thermal.status", ThermalStatus(state="fault", reason="i2c"))
    await pub.publish("thermal.status", ThermalStatus(state="ok"))
    await pub.publish("screening.state", ScreeningState(state="idle"))
    await pub.publish("screening.state", ScreeningState(state="measuring", progress=0.5))
    await pub.publish("health.thermal", Health(daemon="thermal", state="ready", pid=1, started_ts=0.0))
    # Telemetry is not retained.
    await pub.publish("test.x", Scratch(n=1))
    await settle(pub)

    # One client per pattern: overlapping patterns on one client may see a state value twice.
    by_prefix, by_star, by_name = [await make_client(f"late-{i}") for i in range(3)]
    thermal = by_prefix.subscribe("thermal.*")
    everything = by_star.subscribe("*")
    exact = by_name.subscribe("screening.state")

    got = {rx.topic: rx.msg for rx in await drain(thermal, by_prefix)}
    assert got == {"thermal.status": ThermalStatus(state="ok")}
    got = {rx.topic: rx.msg for rx in await drain(everything, by_star)}
    assert got == {
        "thermal.status": ThermalStatus(state="ok"),
        "screening.state": ScreeningState(state="measuring", progress=0.5),
        "health.thermal": Health(daemon="thermal", state="ready", pid=1, started_ts=0.0),
    }
    assert [rx.msg for rx in await drain(exact, by_name)] == [ScreeningState(state="measuring", progress=0.5)]
    assert broker.retained.keys() == {"thermal.status", "screening.state", "health.thermal"}


async def test_prefix_subscription_gets_live_messages_of_its_prefix_only(
    broker: Broker, make_client: MakeClient
) -> None:
    pub = await make_client("pub")
    sub_client = await make_client("sub")
    thermal = sub_client.subscribe("thermal.*")
    await settle(sub_client)
    await pub.publish("screening.state", ScreeningState(state="idle"))
    await pub.publish("thermal.status", ThermalStatus(state="ok"))
    rx = await thermal.get(5)
    assert (rx.topic, rx.msg) == ("thermal.status", ThermalStatus(state="ok"))
    assert await drain(thermal, sub_client) == []


async def test_second_subscription_on_one_client_gets_the_state_too(
    broker: Broker, make_client: MakeClient
) -> None:
    pub = await make_client("pub")
    await pub.publish("thermal.status", ThermalStatus(state="ok"))
    await settle(pub)
    bus = await make_client("two-parts")
    first = bus.subscribe("thermal.status")
    assert (await first.get(5)).msg == ThermalStatus(state="ok")
    # The broker sends retained values once per pattern; the client serves the second part.
    second = bus.subscribe("thermal.status")
    assert (await second.get(5)).msg == ThermalStatus(state="ok")


async def test_unsubscribe_stops_delivery(broker: Broker, make_client: MakeClient) -> None:
    pub = await make_client("pub")
    bus = await make_client("sub")
    keep = bus.subscribe("test.state.*")
    gone = bus.subscribe("test.state.a")
    await settle(bus)
    gone.close()
    await settle(bus)
    await pub.publish("test.state.a", Scratch(n=1))
    assert (await keep.get(5)).msg == Scratch(n=1)
    assert await drain(gone, bus) == []
    async with asyncio.timeout(1):
        assert [rx async for rx in gone] == []  # a closed subscription ends its iteration
