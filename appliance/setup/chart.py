"""The events page's chart: readings over time as plain SVG, drawn on the server.

No script and no CDN: an <svg> inline in the page. Each result is a mark at its time and
estimate, its shape saying what it was (a circle normal, a triangle elevated, a cross retry
without an estimate, on the axis), so it reads without colour; a dashed line is the
threshold. Everything placed in the SVG is escaped.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 36


@dataclass(frozen=True, slots=True)
class Point:
    wall_ts: float
    estimate_c: float | None
    result: str


def _fmt_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%m-%d %H:%M")


def chart_svg(points: Sequence[Point], threshold_c: float, unit: str = "C") -> str:
    def conv(c: float) -> float:
        return c * 9 / 5 + 32 if unit == "F" else c

    if not points:
        return (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="no readings">'
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">'
            "No readings in this range</text></svg>"
        )
    t0 = min(p.wall_ts for p in points)
    t1 = max(p.wall_ts for p in points)
    span = max(t1 - t0, 60.0)
    values = [conv(p.estimate_c) for p in points if p.estimate_c is not None] + [conv(threshold_c)]
    lo, hi = min(values) - 0.5, max(values) + 0.5
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ts: float) -> float:
        return LEFT + (ts - t0) / span * plot_w

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{len(points)} readings over time">',
        f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for ts in (t0, t0 + span / 2, t0 + span):
        label = html.escape(_fmt_time(ts))
        parts.append(
            f'<text class="axis" x="{x(ts):.1f}" y="{HEIGHT - 12}" text-anchor="middle">{label}</text>'
        )
    ty = y(conv(threshold_c))
    parts.append(f'<line class="threshold" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
    for p in points:
        px = x(p.wall_ts)
        title = html.escape(
            f"{_fmt_time(p.wall_ts)} {p.result}"
            + ("" if p.estimate_c is None else f" {conv(p.estimate_c):.1f} °{unit}")
        )
        if p.estimate_c is None:
            py = float(TOP + plot_h - 6)
            parts.append(
                f'<path class="mark retry" d="M{px - 4:.1f},{py - 4:.1f}L{px + 4:.1f},{py + 4:.1f}'
                f'M{px - 4:.1f},{py + 4:.1f}L{px + 4:.1f},{py - 4:.1f}"><title>{title}</title></path>'
            )
        elif p.result == "elevated":
            py = y(conv(p.estimate_c))
            parts.append(
                f'<path class="mark elevated" '
                f'd="M{px:.1f},{py - 6:.1f}L{px + 5:.1f},{py + 4:.1f}L{px - 5:.1f},{py + 4:.1f}Z">'
                f"<title>{title}</title></path>"
            )
        else:
            py = y(conv(p.estimate_c))
            parts.append(
                f'<circle class="mark {html.escape(p.result)}" cx="{px:.1f}" cy="{py:.1f}" r="4">'
                f"<title>{title}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)
