"""`appliance run room [--config config/room.toml]`: the hosted room service.

One aiohttp process with SQLite (appliance.room.app). It runs in the shared daemon runtime
for READY/STATUS/watchdog under systemd and an orderly stop, but it needs no bus: it connects
to one only when service.bus_socket is set (the demo, so its health shows beside the kiosk's
daemons). Its configuration is config/room.toml, not the kiosk's appliance.toml.
"""

from __future__ import annotations

import logging
import os

import msgspec

from appliance.config import AppConfig, with_env_overrides
from appliance.errors import ApplianceError, ConfigError
from appliance.room.app import make_app, serving, tls_context
from appliance.room.config import RoomConfig, load_room_config, room_config_path, turn_secret
from appliance.room.services import SERVICES
from appliance.runtime import Main, Runtime, run_daemon, setup_logging

log = logging.getLogger(__name__)


def make_main(config: RoomConfig, source: str) -> Main:
    async def main(rt: Runtime) -> None:
        if config.service.bus_socket is not None:
            # Only for health.room: the socket named in room.toml, whatever appliance.toml says.
            bus = msgspec.structs.replace(rt.config.bus, socket=config.service.bus_socket)
            rt.config = msgspec.structs.replace(rt.config, bus=bus)
            await rt.connect_bus()
        try:
            tls = tls_context(config)
        except OSError as exc:  # ssl.SSLError is one too
            raise ConfigError(
                source, "service.tls_cert", f"cannot load the certificate or key: {exc}"
            ) from None
        app = make_app(config, turn_secret=turn_secret(config, source))
        if app[SERVICES].accounts.count_admins() == 0:
            log.warning(
                "no admin account yet: add one with `appliance room admin add NAME --config %s`", source
            )
        svc = config.service
        try:
            url = await rt.stack.enter_async_context(serving(app, svc.host, svc.port, tls))
        except OSError as exc:
            raise ConfigError(
                source, "service.port", f"cannot listen on {svc.host}:{svc.port}: {exc.strerror}"
            ) from None
        log.info("room service on %s (database %s)", url, config.service.database)
        rt.ready(f"listening on {url}")

    return main


async def main(rt: Runtime) -> None:
    """The registry's entry (appliance.daemons): the config from APPLIANCE_ROOM_CONFIG or /etc."""
    await make_main(load_room_config(), str(room_config_path()))(rt)


def run_room(config_file: str | os.PathLike[str] | None) -> int:
    setup_logging("room")
    try:
        config = load_room_config(config_file)
    except ApplianceError as exc:
        log.error("appliance room: %s", exc)
        return 1
    source = str(room_config_path(config_file))
    return run_daemon("room", make_main(config, source), with_env_overrides(AppConfig()))
