"""The access log, without secrets: no query strings (sessions, codes) and no invite tokens.

aiohttp's default access log writes the request line as sent, which here would put viewer
session tokens (/api/v1/ws?session=...), pairing codes (/activate?code=...) and invite tokens
(/view/<token>) into the log.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger("appliance.room.access")

# Anywhere in the path: "//view/<token>" or "/x/../view/<token>" are 404s, but their token is real.
_VIEW = re.compile(r"/view/[^/]+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def redact(path: str) -> str:
    # The path arrives percent-decoded: a %0A in it would start a forged line of the log.
    path = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", path)
    return _VIEW.sub("/view/<invite>", path)


class RedactingAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info(
            "%s %s %s %d %.1f ms",
            request.remote,
            request.method,
            redact(request.path),
            response.status,
            time * 1000,
        )

    @property
    def enabled(self) -> bool:
        return log.isEnabledFor(logging.INFO)
