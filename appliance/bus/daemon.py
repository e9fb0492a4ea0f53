"""`appliance run bus`: the broker daemon, socket-activated under systemd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from appliance.bus.broker import Broker, group_ids
from appliance.runtime import Runtime, listen_fds

log = logging.getLogger(__name__)


async def main(rt: Runtime) -> None:
    cfg = rt.config.bus
    gids = group_ids(cfg.allowed_groups)
    broker = Broker(
        max_frame=cfg.max_frame_bytes,
        event_queue=cfg.event_queue,
        allowed_uids=cfg.allowed_uids,
        allowed_gids=gids,
    )
    path = rt.config.bus_socket
    fds = listen_fds()
    if fds:
        # Socket activation: systemd owns the listening socket, so clients queue on it while
        # the broker (re)starts and never see the socket file disappear.
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        await broker.start(None, sock=sock)
        where = f"{path} (socket-activated)"
    else:
        await broker.start(path, mode=cfg.socket_mode, group=gids[0] if gids else None)
        rt.stack.callback(_unlink, path)
        where = str(path)
    rt.stack.push_async_callback(broker.close)
    # A client of its own broker, as every daemon is: health.bus (state, status, asyncio task
    # count) like the others, for the setup page and the soak. It closes before the broker.
    await rt.connect_bus(timeout=5.0)
    rt.spawn(_report(rt, broker), "stats")
    rt.ready(f"listening on {where}")


def _unlink(path: os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _report(rt: Runtime, broker: Broker) -> None:
    last = broker.stats.frames_in
    while True:
        await asyncio.sleep(10)
        s = broker.stats
        rate = (s.frames_in - last) / 10
        last = s.frames_in
        rt.status(
            f"{len(broker.clients)} clients, {rate:.0f} frames/s in, {s.dropped} dropped, {s.cut_off} cut off"
        )
