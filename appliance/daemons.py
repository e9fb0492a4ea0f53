"""Which daemons exist, and where each one's `main(rt)` lives.

A daemon is a subpackage with a `daemon` module holding `async def main(rt: Runtime)`. The
registry lists every daemon the appliance will have; one whose module is not in this build
yet is reported as such instead of failing with an import traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import cast

from appliance.runtime import Main

MODULES: dict[str, str] = {
    "bus": "appliance.bus.daemon",
    "thermal": "appliance.thermal.daemon",
    "screening": "appliance.screening.daemon",
    "camera": "appliance.camera.daemon",
    "publisher": "appliance.publisher.daemon",
    "screen": "appliance.screen.daemon",
    "setup": "appliance.setup.daemon",
    "room": "appliance.room.daemon",
}

# Order of start in the demo (and of the units' dependencies): the bus first, the producers of
# data before their consumers.
START_ORDER = ("bus", "thermal", "camera", "screening", "publisher", "screen", "setup")


class NotInThisBuild(Exception):
    pass


def load(name: str) -> Main:
    module_name = MODULES.get(name)
    if module_name is None:
        raise NotInThisBuild(f"no daemon named {name!r}; known: {', '.join(MODULES)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotInThisBuild(f"daemon {name!r} is not part of this build yet") from None
        raise
    return cast(Main, module.main)


def available() -> list[str]:
    names = []
    for name in MODULES:
        try:
            importlib.util.find_spec(MODULES[name])
        except ModuleNotFoundError:
            continue
        if importlib.util.find_spec(MODULES[name]) is not None:
            names.append(name)
    return names
