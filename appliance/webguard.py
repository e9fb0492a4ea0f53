"""aiohttp middleware that the room service and the setup page share."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def static_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/static/<a name past the file system's limit>: aiohttp's static route lets the OSError
    (ENAMETOOLONG) out as a 500; no such file is a 404."""
    try:
        return await handler(request)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG and request.path.startswith("/static/"):
            raise web.HTTPNotFound() from None
        raise
