"""The setup pages, one module each; every module has `add_routes(app)`."""

from __future__ import annotations

from types import ModuleType

from appliance.setup.pages import (
    about,
    access,
    calibration,
    events,
    live,
    logs,
    maintenance,
    pairing,
    settings,
    status,
)

ROUTE_MODULES: tuple[ModuleType, ...] = (
    access,
    status,
    pairing,
    settings,
    calibration,
    live,
    events,
    logs,
    maintenance,
    about,
)
