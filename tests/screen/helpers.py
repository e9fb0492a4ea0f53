"""Shared by the screen tests: inputs in a given state, test pictures, pixel checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pygame

from appliance.bus.topics import ThermalFrame
from appliance.screen.layout import Box
from appliance.screen.model import Inputs
from appliance.screen.palette import RGB
from appliance.screen.text import DrawnText, Fonts

MONO = 1000.0
WALL = 1_700_000_000.0
HOT_C = 36.0
COLD_C = 21.0


def camera_frame(width: int = 320, height: int = 240) -> npt.NDArray[np.uint8]:
    """RGB: a red left half and a blue right half, so mirroring shows."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[:, : width // 2] = (200, 30, 30)
    frame[:, width // 2 :] = (30, 30, 200)
    return frame


def thermal_pixels(hot_col: int = 1) -> list[float]:
    """Cold room, a hot 3x3 block at rows 2..4 starting at hot_col (left side of the image)."""
    grid = np.full((8, 8), COLD_C)
    grid[2:5, hot_col : hot_col + 3] = HOT_C
    return [float(v) for v in grid.ravel()]


def inputs(*, with_camera: bool = True, with_thermal: bool = True, **states: Any) -> Inputs:
    inp = Inputs()
    for name, value in states.items():
        setattr(inp, name, value)
    if with_thermal:
        msg = ThermalFrame(pixels=thermal_pixels(), thermistor=24.0, rate_hz=10.0, frame_seq=1)
        inp.apply("thermal.frame", msg, MONO)
    if with_camera:
        inp.note_camera(MONO)
    return inp


def pixel(surface: pygame.Surface, xy: tuple[float, float]) -> RGB:
    c = surface.get_at((round(xy[0]), round(xy[1])))
    return (c.r, c.g, c.b)


def region(surface: pygame.Surface, box: Box) -> npt.NDArray[np.uint8]:
    x, y, w, h = box
    return pygame.surfarray.array3d(surface)[x : x + w, y : y + h]


def share_of(surface: pygame.Surface, box: Box, colour: RGB, tol: int = 0) -> float:
    """The share of pixels in box within tol of colour."""
    px = region(surface, box).astype(np.int32)
    close = np.all(np.abs(px - np.array(colour)) <= tol, axis=2)
    return float(close.mean())


def assert_text_on_screen(surface: pygame.Surface, fonts: Fonts, drawn: DrawnText) -> None:
    """The region the renderer says holds this text equals the text drawn alone."""
    alone = fonts.render(drawn.text, drawn.size, drawn.bold, drawn.colour, drawn.background)
    assert alone.get_size() == drawn.rect[2:], drawn
    on_screen = region(surface, drawn.rect)
    expected = pygame.surfarray.array3d(alone)
    assert np.array_equal(on_screen, expected), (
        f"{drawn.role} {drawn.text!r} is not on the screen at {drawn.rect}"
    )
    # And the text is text: its ink is there, not only its background.
    assert share_of(surface, drawn.rect, drawn.colour, tol=40) > 0.02, drawn
