"""GET /view/<invite token>: the viewer page, and /static/ with the page's files.

The page (static/viewer.html, viewer.js, viewer.css, from appliance.publisher's side) reads
the invite token from its own URL and exchanges it for a session (POST /api/v1/viewer/session);
this handler checks only that the token looks like one, so the page itself is no oracle.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from appliance.room import pages

STATIC_DIR = Path(__file__).with_name("static")
VIEWER_PAGE = STATIC_DIR / "viewer.html"
_INVITE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


async def viewer(request: web.Request) -> web.StreamResponse:
    if not _INVITE.match(request.match_info["invite"]):
        return web.Response(
            text=pages.message("Not found", "This is not a viewer link."),
            status=404,
            content_type="text/html",
        )
    if not VIEWER_PAGE.is_file():
        text = pages.message("Viewer unavailable", "The viewer page is not part of this build.")
        return web.Response(text=text, status=503, content_type="text/html")
    return web.FileResponse(VIEWER_PAGE, headers=_NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/view/{invite}", viewer)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False, append_version=False)
