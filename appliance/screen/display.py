"""Opening the display: the SDL video driver, full screen or a window.

screen.driver picks SDL's video driver. "auto" means: whatever SDL_VIDEODRIVER says if it is
set (tests and the headless demo set "dummy"); SDL's own choice inside a desktop session
(DISPLAY or WAYLAND_DISPLAY set); otherwise kmsdrm, which draws straight to the display from
a console, as a dedicated kiosk runs. Full screen takes the display's mode; the layout then
follows the surface's real size, whatever was asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import pygame

from appliance.config import ScreenConfig
from appliance.errors import HardwareError

log = logging.getLogger(__name__)

CAPTION = "appliance"


def choose_driver(configured: str, env: Mapping[str, str]) -> str | None:
    """The SDL video driver to ask for, or None to leave it to SDL."""
    if configured != "auto":
        return configured
    if env.get("SDL_VIDEODRIVER"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return "kmsdrm"


class Display:
    def __init__(self, config: ScreenConfig) -> None:
        driver = choose_driver(config.driver, os.environ)
        if driver is not None:
            os.environ["SDL_VIDEODRIVER"] = driver
        try:
            pygame.display.init()
            pygame.font.init()
            flags = pygame.FULLSCREEN if config.fullscreen else 0
            self.surface = pygame.display.set_mode((config.width, config.height), flags)
        except pygame.error as exc:
            pygame.display.quit()
            name = driver or os.environ.get("SDL_VIDEODRIVER") or "SDL's default"
            raise HardwareError(
                f"cannot open the display with the {name} video driver: {exc}. "
                "On a console kmsdrm needs the user in the video and render groups; "
                "set screen.driver to match the machine (dummy for none)"
            ) from None
        self.driver = pygame.display.get_driver()
        self.size: tuple[int, int] = self.surface.get_size()
        pygame.display.set_caption(CAPTION)
        if config.fullscreen:
            pygame.mouse.set_visible(False)
        log.info(
            "display: %s driver, %dx%d%s",
            self.driver,
            *self.size,
            " full screen" if config.fullscreen else "",
        )

    def flip(self) -> None:
        pygame.display.flip()

    def pump(self) -> bool:
        """Handle window events; False once the window was closed (a desktop window's X)."""
        closed = False
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                closed = True
        return not closed

    def close(self) -> None:
        pygame.display.quit()
