"""A receiver for sd_notify datagrams, so the demo supervises daemons the way systemd does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path


def parse_notify(data: bytes) -> dict[str, str]:
    """'READY=1\\nSTATUS=ok' -> {'READY': '1', 'STATUS': 'ok'}; malformed lines are skipped."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, on_message: Callable[[dict[str, str]], None]) -> None:
        self.on_message = on_message

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_message(parse_notify(data))


class NotifySocket:
    """A bound AF_UNIX datagram socket; pass `path` to a child as NOTIFY_SOCKET."""

    def __init__(self, path: Path, on_message: Callable[[dict[str, str]], None]) -> None:
        self.path = path
        self.on_message = on_message
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self.on_message), sock=sock)
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
