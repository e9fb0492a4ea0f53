"""HTML for the setup pages: escaping by default, the page frame, small form helpers.

`h(template, **values)` escapes every value unless it is already Markup, so a page builds
its HTML with str.format and cannot forget to escape a daemon's status line, a log line or
a file name. No inline script or style anywhere: the Content-Security-Policy forbids them;
behaviour lives in /static/app.js, looks in /static/app.css.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from appliance.setup.auth import Session

NAV = (
    ("/status", "Status"),
    ("/pairing", "Pairing"),
    ("/settings", "Settings"),
    ("/calibration", "Calibration"),
    ("/live", "Live view"),
    ("/events", "Events"),
    ("/logs", "Logs"),
    ("/maintenance", "Maintenance"),
    ("/about", "About"),
)


# Inline (a data: URL, which the CSP allows for images), so no request for /favicon.ico.
FAVICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E"
    "%3Crect width='32' height='32' rx='6' fill='%230072b2'/%3E"
    "%3Ccircle cx='16' cy='12' r='5' fill='white'/%3E"
    "%3Crect x='9' y='19' width='14' height='9' rx='4' fill='white'/%3E%3C/svg%3E"
)


class Markup(str):
    """A string of trusted HTML."""


EMPTY = Markup("")


def esc(value: object) -> Markup:
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


def h(template: str, /, **values: object) -> Markup:
    return Markup(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Markup], sep: str = "") -> Markup:
    return Markup(sep.join(parts))


def csrf_field(session: Session) -> Markup:
    return h('<input type="hidden" name="csrf" value="{t}">', t=session.csrf)


def notice(kind: str, text: object) -> Markup:
    """kind: ok | error | info. role=status/alert so a screen reader says it."""
    role = "alert" if kind == "error" else "status"
    return h('<p class="notice {k}" role="{r}">{t}</p>', k=kind, r=role, t=text)


def page(title: str, body: Markup, *, session: Session | None, current: str = "", live: bool = False) -> str:
    nav = Markup("")
    if session is not None and session.authenticated:
        links = join(
            h(
                '<a href="{u}"{c}>{t}</a>',
                u=url,
                t=text,
                c=Markup(' aria-current="page"' if url == current else ""),
            )
            for url, text in NAV
        )
        logout = h(
            '<form method="post" action="/logout" class="logout">{csrf}'
            '<button type="submit">Log out</button></form>',
            csrf=csrf_field(session),
        )
        nav = h("<nav>{links}{logout}</nav>", links=links, logout=logout)
    return h(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>{title} - kiosk setup</title><link rel="icon" href="{icon}">'
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script></head>'
        '<body data-live="{live}"><header><h1>Kiosk setup</h1>{nav}</header>'
        "<main><h2>{title}</h2>{body}</main>"
        "<footer>A screening indicator, not a medical device.</footer></body></html>",
        title=title,
        nav=nav,
        body=body,
        live="1" if live else "0",
        icon=FAVICON,
    )
