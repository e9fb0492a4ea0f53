"""The status screen: `appliance run screen`, a pygame display for the person at the door.

    bus topics --> model.Inputs --compose()--> view.View --Renderer.render()--> pygame surface
                                    (pure)                  (draws only what the view says)

| module | holds |
|---|---|
| `strings.py` | every prompt in every language (one catalogue) |
| `palette.py` | colours (Okabe-Ito, safe for colour-blind people) and the thermal colour map |
| `layout.py` | where each region sits for a screen size (pure) |
| `view.py` | the view model and `compose`, from bus state to what the screen shows (pure) |
| `frames.py` | frame ring pixels to RGB, numpy only (the setup page's snapshot uses it too) |
| `overlay.py` | the thermal overlay: 8x8 -> 32x32 -> RGBA (pure numpy) |
| `render.py`, `icons.py`, `qr.py` | drawing, with pygame |
| `sounds.py` | result and alert tones through pygame.mixer; silent without an audio device |
| `display.py` | SDL driver choice (kmsdrm on a console, a window on a desktop, dummy in tests) |
| `daemon.py` | the bus shell: subscriptions, config reload, redraw on change at <= 30 fps |
"""

from __future__ import annotations

import os
import sys

# pygame prints a banner to stdout on import; a daemon's stdout goes to the journal, and the
# benchmark's stdout is its JSON.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def import_pygame() -> None:
    """Import pygame without setuptools' pkg_resources (the screen daemon calls this first).

    pygame.pkgdata (which pygame's __init__ imports, for freeze tools) takes pkg_resources
    when it is installed; that import scans every installed distribution and pulls in email,
    http and more: ~8 MB of RSS for the screen daemon, to find pygame's own default font.
    Without it pkgdata opens the file next to pygame's module, which is where it is. Only
    this import sees pkg_resources as missing: anything importing it later gets it.

    Not done when this package is imported: the setup page imports `frames` (numpy only)
    and must not load pygame for it.
    """
    if "pygame" in sys.modules or "pkg_resources" in sys.modules:
        return
    sys.modules["pkg_resources"] = None  # type: ignore[assignment]
    try:
        import pygame  # noqa: F401
    finally:
        del sys.modules["pkg_resources"]
