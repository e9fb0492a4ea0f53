from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.bus.broker import Broker
from appliance.bus.client import BusClient

from .helpers import short_socket_path


@pytest.fixture
def sock_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # tmp_path carries the test's name and can exceed the 108 bytes of a Unix socket path.
    return short_socket_path(tmp_path_factory.mktemp("bus"))


@pytest.fixture
async def make_broker(sock_path: Path) -> AsyncIterator[Callable[..., Awaitable[Broker]]]:
    brokers: list[Broker] = []

    async def make(**kwargs: Any) -> Broker:
        broker = Broker(**kwargs)
        await broker.start(sock_path)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        await broker.close()


@pytest.fixture
async def broker(make_broker: Callable[..., Awaitable[Broker]]) -> Broker:
    return await make_broker()


@pytest.fixture
async def make_client(sock_path: Path) -> AsyncIterator[Callable[..., Awaitable[BusClient]]]:
    clients: list[BusClient] = []

    async def make(name: str = "test", **kwargs: Any) -> BusClient:
        client = BusClient(sock_path, name, **kwargs)
        clients.append(client)
        await client.connect(timeout=10)
        return client

    yield make
    for client in clients:
        await client.close()
