"""Icons drawn with pygame primitives, so each state reads without relying on colour.

Each icon fills a square box (x, y, size, size) in one colour. Thick curves are drawn as
polygons (`ring_segment`) rather than with pygame.draw.arc, whose wide arcs leave gaps.
"""

from __future__ import annotations

import math

import pygame

from appliance.screen.layout import Box
from appliance.screen.palette import RGB
from appliance.screen.view import Icon

Point = tuple[float, float]


def ring_segment(
    surface: pygame.Surface,
    colour: RGB,
    centre: Point,
    r_outer: float,
    r_inner: float,
    start: float,
    end: float,
) -> None:
    """A filled ring sector from angle start to end (radians, 0 = up, clockwise)."""
    if end <= start:
        return
    steps = max(2, int(48 * (end - start) / math.tau) + 2)
    cx, cy = centre
    outer = [
        (
            cx + r_outer * math.sin(start + (end - start) * i / steps),
            cy - r_outer * math.cos(start + (end - start) * i / steps),
        )
        for i in range(steps + 1)
    ]
    inner = [
        (
            cx + r_inner * math.sin(start + (end - start) * i / steps),
            cy - r_inner * math.cos(start + (end - start) * i / steps),
        )
        for i in range(steps, -1, -1)
    ]
    pygame.draw.polygon(surface, colour, outer + inner)


def _person(surface: pygame.Surface, colour: RGB, cx: float, top: float, s: float) -> None:
    pygame.draw.circle(surface, colour, (cx, top + 0.22 * s), 0.17 * s)
    body = pygame.Rect(0, 0, round(0.62 * s), round(0.5 * s))
    body.midtop = (round(cx), round(top + 0.45 * s))
    pygame.draw.rect(
        surface, colour, body, border_top_left_radius=round(0.28 * s), border_top_right_radius=round(0.28 * s)
    )


def _arrow(surface: pygame.Surface, colour: RGB, box: Box, up: bool) -> None:
    x, y, s, _ = box
    cx = x + s / 2
    head = [(cx, y + 0.05 * s), (x + 0.9 * s, y + 0.48 * s), (x + 0.1 * s, y + 0.48 * s)]
    shaft = [
        (cx - 0.14 * s, y + 0.46 * s),
        (cx + 0.14 * s, y + 0.46 * s),
        (cx + 0.14 * s, y + 0.95 * s),
        (cx - 0.14 * s, y + 0.95 * s),
    ]
    if not up:
        head = [(px, 2 * y + s - py) for px, py in head]
        shaft = [(px, 2 * y + s - py) for px, py in shaft]
    pygame.draw.polygon(surface, colour, head)
    pygame.draw.polygon(surface, colour, shaft)


def draw_icon(surface: pygame.Surface, icon: Icon, box: Box, colour: RGB, background: RGB) -> None:
    """Draw icon in box; background is the colour behind it (for cut-outs such as the "!")."""
    x, y, s, _ = box
    cx, cy = x + s / 2, y + s / 2
    stroke = max(2, round(0.09 * s))
    if icon == "person":
        _person(surface, colour, cx, y + 0.05 * s, 0.9 * s)
    elif icon == "people":
        _person(surface, colour, x + 0.32 * s, y + 0.12 * s, 0.62 * s)
        _person(surface, colour, x + 0.68 * s, y + 0.25 * s, 0.62 * s)
    elif icon in ("arrow-up", "arrow-down"):
        _arrow(surface, colour, box, up=icon == "arrow-up")
    elif icon == "hand":
        palm = pygame.Rect(round(x + 0.22 * s), round(y + 0.42 * s), round(0.56 * s), round(0.5 * s))
        pygame.draw.rect(surface, colour, palm, border_radius=round(0.14 * s))
        for i in range(4):
            finger = pygame.Rect(
                round(x + (0.22 + 0.145 * i) * s),
                round(y + (0.12 + 0.04 * abs(1.5 - i)) * s),
                round(0.12 * s),
                round(0.42 * s),
            )
            pygame.draw.rect(surface, colour, finger, border_radius=round(0.06 * s))
        thumb = [
            (x + 0.24 * s, y + 0.6 * s),
            (x + 0.06 * s, y + 0.4 * s),
            (x + 0.14 * s, y + 0.34 * s),
            (x + 0.3 * s, y + 0.5 * s),
        ]
        pygame.draw.polygon(surface, colour, thumb)
    elif icon == "check":
        pygame.draw.polygon(
            surface,
            colour,
            [
                (x + 0.08 * s, y + 0.52 * s),
                (x + 0.2 * s, y + 0.4 * s),
                (x + 0.4 * s, y + 0.6 * s),
                (x + 0.8 * s, y + 0.16 * s),
                (x + 0.92 * s, y + 0.28 * s),
                (x + 0.4 * s, y + 0.84 * s),
            ],
        )
    elif icon == "alert":
        pygame.draw.polygon(
            surface, colour, [(cx, y + 0.04 * s), (x + 0.98 * s, y + 0.92 * s), (x + 0.02 * s, y + 0.92 * s)]
        )
        bar = pygame.Rect(0, 0, round(0.11 * s), round(0.36 * s))
        bar.midtop = (round(cx), round(y + 0.3 * s))
        pygame.draw.rect(surface, background, bar, border_radius=round(0.04 * s))
        pygame.draw.circle(surface, background, (cx, y + 0.79 * s), 0.065 * s)
    elif icon == "retry":
        ring_segment(surface, colour, (cx, cy), 0.42 * s, 0.42 * s - stroke * 1.3, 0.9, math.tau - 0.35)
        tip_angle = 0.9
        tx, ty = cx + 0.36 * s * math.sin(tip_angle), cy - 0.36 * s * math.cos(tip_angle)
        pygame.draw.polygon(
            surface,
            colour,
            [(tx - 0.2 * s, ty - 0.12 * s), (tx + 0.12 * s, ty - 0.2 * s), (tx + 0.08 * s, ty + 0.14 * s)],
        )
    elif icon == "fault":
        ring_segment(surface, colour, (cx, cy), 0.45 * s, 0.45 * s - stroke * 1.2, 0.0, math.tau)
        d = 0.2 * s
        pygame.draw.line(surface, colour, (cx - d, cy - d), (cx + d, cy + d), round(stroke * 1.3))
        pygame.draw.line(surface, colour, (cx - d, cy + d), (cx + d, cy - d), round(stroke * 1.3))
    elif icon == "hourglass":
        pygame.draw.rect(
            surface, colour, pygame.Rect(round(x + 0.18 * s), round(y + 0.04 * s), round(0.64 * s), stroke)
        )
        pygame.draw.rect(
            surface,
            colour,
            pygame.Rect(round(x + 0.18 * s), round(y + 0.96 * s - stroke), round(0.64 * s), stroke),
        )
        pygame.draw.polygon(
            surface, colour, [(x + 0.24 * s, y + 0.1 * s), (x + 0.76 * s, y + 0.1 * s), (cx, cy)], stroke
        )
        pygame.draw.polygon(
            surface, colour, [(x + 0.24 * s, y + 0.9 * s), (x + 0.76 * s, y + 0.9 * s), (cx, cy)]
        )
    elif icon == "link":
        for dx in (-0.16, 0.16):
            link = pygame.Rect(0, 0, round(0.5 * s), round(0.3 * s))
            link.center = (round(cx + dx * s), round(cy))
            pygame.draw.rect(surface, colour, link, stroke, border_radius=round(0.15 * s))
    elif icon == "key":
        ring_segment(surface, colour, (x + 0.3 * s, cy), 0.22 * s, 0.22 * s - stroke * 1.2, 0.0, math.tau)
        pygame.draw.rect(
            surface, colour, pygame.Rect(round(x + 0.5 * s), round(cy - stroke / 2), round(0.44 * s), stroke)
        )
        for tooth in (0.74, 0.88):
            pygame.draw.rect(
                surface, colour, pygame.Rect(round(x + tooth * s), round(cy), stroke, round(0.14 * s))
            )
    elif icon == "speaker":
        pygame.draw.polygon(
            surface,
            colour,
            [
                (x + 0.08 * s, y + 0.38 * s),
                (x + 0.26 * s, y + 0.38 * s),
                (x + 0.48 * s, y + 0.16 * s),
                (x + 0.48 * s, y + 0.84 * s),
                (x + 0.26 * s, y + 0.62 * s),
                (x + 0.08 * s, y + 0.62 * s),
            ],
        )
        for r in (0.2, 0.34):
            ring_segment(surface, colour, (x + 0.5 * s, cy), r * s, r * s - stroke, 0.6, 2.55)
    elif icon == "ring":
        ring_segment(surface, colour, (cx, cy), 0.45 * s, 0.45 * s - stroke, 0.0, math.tau)


def draw_camera_off(surface: pygame.Surface, box: Box, colour: RGB) -> None:
    """A camera with a slash through it, for a camera fault in the preview."""
    x, y, s, _ = box
    stroke = max(2, round(0.07 * s))
    body = pygame.Rect(round(x + 0.1 * s), round(y + 0.3 * s), round(0.8 * s), round(0.5 * s))
    pygame.draw.rect(surface, colour, body, stroke, border_radius=round(0.06 * s))
    pygame.draw.circle(surface, colour, (x + 0.5 * s, y + 0.55 * s), 0.14 * s, stroke)
    pygame.draw.line(surface, colour, (x + 0.1 * s, y + 0.15 * s), (x + 0.9 * s, y + 0.95 * s), stroke)
