"""What each kiosk daemon leaves out of its process at startup, for the RSS budget (issue 8).

Seven daemons share a 300 MB budget, each its own interpreter: a library one of them imports
but does not use costs RSS in that process all day. Each check runs in a fresh interpreter,
as `appliance run NAME` would.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance import daemons


def run_python(code: str) -> None:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


# What `main` imports besides the daemon module, with the demo's sim backends.
AT_START = {
    "bus": [],
    "thermal": ["appliance.thermal.backend", "gpiozero.pins.mock", "adafruit_amg88xx"],
    "screening": ["gpiozero.pins.mock"],
    "camera": ["appliance.camera.sim_backend", "av", "numpy.random"],
    "screen": [],
}


@pytest.mark.parametrize("name", sorted(daemons.WITHOUT_TLS))
def test_daemons_without_tls_load_no_openssl(name: str) -> None:
    # asyncio imports ssl and numpy.random imports _hashlib; both map libssl/libcrypto (~5 MB).
    code = (
        "import importlib, sys\n"
        "from appliance import daemons\n"
        f"daemons.prepare({name!r})\n"
        f"daemons.load({name!r})\n"
        f"for module in {AT_START[name]!r}:\n"
        "    importlib.import_module(module)\n"
        "import asyncio, hashlib, hmac, secrets\n"
        "assert hashlib.sha256(b'x').hexdigest().startswith('2d711642'), 'builtin sha256'\n"
        "hmac.new(b'k', b'm', 'sha256').digest(); secrets.token_hex(4)\n"
        "asyncio.run(asyncio.sleep(0))\n"
        "loaded = [m for m in ('ssl', '_ssl', '_hashlib') if sys.modules.get(m) is not None]\n"
        "assert not loaded, loaded\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert '/libssl.so' not in maps and '/libcrypto.so' not in maps, 'OpenSSL is mapped'\n"
    )
    run_python(code)


def test_a_daemon_without_tls_that_asks_for_it_fails_loudly() -> None:
    run_python(
        "from appliance import daemons\n"
        "daemons.forgo_openssl()\n"
        "try:\n"
        "    import ssl\n"
        "except ImportError as exc:\n"
        "    assert 'halted' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('ssl imported')\n"
    )


def test_the_tls_daemons_are_not_in_the_list() -> None:
    assert not {"setup", "publisher", "room"} & daemons.WITHOUT_TLS
    assert set(daemons.MODULES) >= daemons.WITHOUT_TLS


def test_setup_starts_without_numpy_or_sqlite() -> None:
    # numpy (~12 MB) only for a snapshot on the live page, sqlite3 only for the events page.
    run_python(
        "import sys\n"
        "import appliance.setup.daemon, appliance.setup.pages\n"
        "for name in ('numpy', 'sqlite3', 'appliance.screening.events', 'appliance.screening.machine'):\n"
        "    assert name not in sys.modules, f'{name} imported at startup'\n"
        "import appliance.bus.framering, appliance.screen.frames, appliance.setup.png\n"
        "assert 'pygame' not in sys.modules, 'a snapshot loads pygame'\n"
    )


def test_screen_starts_without_pkg_resources_or_segno() -> None:
    # pkg_resources (~8 MB) through pygame.pkgdata; segno (~6 MB: urllib, http, email) for the
    # pairing QR code only. pygame's own font must still be found without pkg_resources.
    run_python(
        "import os, sys\n"
        "os.environ['SDL_VIDEODRIVER'] = 'dummy'\n"
        "from appliance import daemons\n"
        "daemons.prepare('screen')\n"
        "import appliance.screen.daemon\n"
        "for name in ('pkg_resources', 'segno', 'email', 'http'):\n"
        "    assert name not in sys.modules, f'{name} imported at startup'\n"
        "import pygame\n"
        "pygame.font.init()\n"
        "assert pygame.font.Font(None, 12).size('x')[0] > 0\n"
        "from appliance.screen.qr import modules\n"
        "assert modules('https://example.org/pair').shape[0] > 21\n"
    )


def test_the_screening_package_imports_nothing_heavy_with_itself() -> None:
    run_python(
        "import sys\n"
        "from appliance.screening import settings, units, calstore\n"
        "assert 'numpy' not in sys.modules\n"
    )
