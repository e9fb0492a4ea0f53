"""aiohttp middleware that the room service and the setup page share."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

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


class BadRequestLog(logging.Filter):
    """aiohttp logs a request it cannot even parse (an 8 KiB request line, a broken header) as
    "Error handling request", at ERROR with a traceback, although the client just gets its
    400. On an unattended kiosk that is log noise anyone on the network can make: it becomes
    one WARNING line, without the traceback. Real server errors stay as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            # The kind of fault and aiohttp's words up to the quote of the request, which may
            # be 8 KiB long and carry a token: none of the client's own text is logged.
            reason = f"{type(exc).__name__}: {str(exc.message).split(':', 1)[0][:120]}"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            args = record.args if isinstance(record.args, tuple) else ()
            remote = args[0] if args else "?"
            record.msg, record.args = "refused a malformed HTTP request from %s: %s", (remote, reason)
            record.exc_info = record.exc_text = None
        return True


def log_bad_requests_briefly() -> None:
    """Install BadRequestLog on aiohttp's server logger, once per process."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestLog) for f in logger.filters):
        logger.addFilter(BadRequestLog())
