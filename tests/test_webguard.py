"""The web guard shared by the room and the setup page: a request aiohttp cannot parse is one
warning line, not an error with a traceback; real server errors stay errors."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from aiohttp import web

from appliance.webguard import log_bad_requests_briefly


async def _raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    reply = await reader.read(200)
    writer.close()
    return reply


async def test_a_malformed_request_is_one_warning_and_a_broken_handler_still_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a real bug")

    log_bad_requests_briefly()
    log_bad_requests_briefly()  # idempotent: one filter however many apps start
    logger = logging.getLogger("aiohttp.server")
    assert sum(type(f).__name__ == "BadRequestLog" for f in logger.filters) == 1
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")

    def server_records() -> list[logging.LogRecord]:
        # What passed the logger's filters: caplog's handler sits on the root logger.
        return [r for r in caplog.records if r.name == "aiohttp.server"]

    app = web.Application()
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        long_line = b"GET /static/?token=" + b"9" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        reply = await _raw_request(port, long_line)
        assert reply.split(b"\r\n")[0].endswith(b" 400 Bad Request"), reply
        [bad] = server_records()
        assert bad.levelno == logging.WARNING
        assert bad.exc_info is None
        line = bad.getMessage()
        assert line == (
            "refused a malformed HTTP request from 127.0.0.1: "
            "LineTooLong: Got more than 8190 bytes when reading"
        )  # nothing of what the client sent (here a "token") reaches the log

        caplog.clear()
        reply = await _raw_request(port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.split(b"\r\n")[0].endswith(b" 500 Internal Server Error"), reply
        [err] = server_records()
        assert err.levelno == logging.ERROR
        assert err.exc_info is not None and isinstance(err.exc_info[1], RuntimeError)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("args", [(), None])
def test_a_record_without_the_remote_address_still_formats(args: tuple[object, ...] | None) -> None:
    from aiohttp.http_exceptions import LineTooLong

    from appliance.webguard import BadRequestLog

    try:
        raise LineTooLong("x" * 500, "8190")
    except LineTooLong:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", args, exc_info
    )
    assert BadRequestLog().filter(record)
    assert record.levelno == logging.WARNING
    assert (
        record.getMessage()
        == "refused a malformed HTTP request from ?: LineTooLong: Got more than 8190 bytes when reading"
    )
