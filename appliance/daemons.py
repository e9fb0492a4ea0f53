"""Which daemons exist, and where each one's `main(rt)` lives.

A daemon is a subpackage with a `daemon` module holding `async def main(rt: Runtime)`. The
registry lists every daemon the appliance will have; one whose module is not in this build
yet is reported as such instead of failing with an import traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    # Not at run time: forgo_openssl() must be able to run before asyncio is first imported.
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


# Daemons that never open a TLS connection or serve one: the bus (a Unix socket), the
# sampler, the screening, the camera (H.264 onto the bus) and the screen. The setup page
# (HTTPS), the publisher (the room service, DTLS) and the room service need TLS.
WITHOUT_TLS = frozenset({"bus", "thermal", "screening", "camera", "screen"})


def forgo_openssl() -> None:
    """Keep OpenSSL (libssl, libcrypto: ~5 MB of RSS a process) out of this process.

    asyncio imports `ssl` whether or not a connection ever uses it, and numpy.random (the
    sims' noise) imports `secrets`, hence `hmac` and `_hashlib`, OpenSSL's hashes. asyncio,
    http.client and urllib run without ssl, and hashlib and hmac fall back to Python's own
    SHA-2, SHA-3, BLAKE2 and MD5 without _hashlib: they all import these in a try/except
    ImportError. Call before asyncio is first imported; a module already loaded stays. A
    daemon in WITHOUT_TLS that opened TLS anyway would fail at once with "import of ssl
    halted; None in sys.modules", not silently in plain text.
    """
    for name in ("ssl", "_hashlib"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def prepare(name: str) -> None:
    """What `appliance run NAME` does before it imports the daemon: choices that must come
    before the first import of a library, each to keep RSS it would never use out of the
    process (issue 8's budget)."""
    if name in WITHOUT_TLS:
        forgo_openssl()
    if name == "screen":
        from appliance.screen import import_pygame

        import_pygame()


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
    return cast("Main", module.main)


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
