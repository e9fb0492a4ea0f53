"""The kiosk's link to a room service whose TLS certificate does not verify.

Such a failure does not heal by asking again in two seconds: someone must fix the service's
certificate, or the kiosk's clock (a Pi without a real-time clock, before NTP syncs, sees every
certificate as not yet valid). So it backs off the long way, as a refusal does, and the
publisher's health says what is wrong. Against a real local TLS server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.bus.client import BusClient
from appliance.publisher.service import PublisherService
from appliance.publisher.signaling import Backoff, Credentials, RoomLink, tls_problem

from .conftest import publisher_config
from .helpers import wait_until
from .test_signaling import RecordingBackoff, fixed, run_link, serve

SECRET_TOKEN = "dev-tok-5ecret-must-never-be-logged"


@dataclass
class TlsRoom:
    url: str
    cert_path: Path

    def trusting_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (as if from a private CA)."""
        ctx = ssl.create_default_context(cafile=str(self.cert_path))
        return ctx


def self_signed(
    tmp: Path, *, not_before: datetime.datetime, not_after: datetime.datetime
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rooms.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@contextlib.asynccontextmanager
async def tls_room(tmp: Path, *, valid_from_days: float = -1.0) -> AsyncIterator[TlsRoom]:
    """A room service over HTTPS with a self-signed certificate; its WebSocket endpoint would
    answer 503, but no client that checks certificates gets that far."""
    now = datetime.datetime.now(datetime.UTC)
    start = now + datetime.timedelta(days=valid_from_days)
    cert_path, key_path = self_signed(tmp, not_before=start, not_after=start + datetime.timedelta(days=30))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)

    async def ws(request: web.Request) -> web.Response:
        return web.Response(status=503, text="reached the service")

    app = web.Application()
    app.router.add_get("/api/v1/ws", ws)
    async with serve(app, server_ctx) as port:
        yield TlsRoom(f"https://127.0.0.1:{port}", cert_path)


async def test_an_untrusted_certificate_is_reported_and_retried_the_long_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backoff = RecordingBackoff()
    async with tls_room(tmp_path) as room:
        creds = Credentials(room.url, SECRET_TOKEN)

        link = RoomLink(fixed(creds), lambda m: None, backoff=backoff, link_retry_max=0.01)
        await run_link(link, 0.5)
    # Every attempt failed on the certificate and backed off uncapped (the refusal's way), not
    # on the short cap of a network that is down.
    assert backoff.caps and set(backoff.caps) == {None}, backoff.caps
    assert link.refused is not None
    assert "TLS certificate" in link.refused and "self-signed certificate" in link.refused, link.refused
    assert "clock" not in link.refused  # nothing says the clock is wrong here
    assert link.last_error == link.refused
    assert SECRET_TOKEN not in caplog.text
    # New credentials (paired again, perhaps with another service): the old reason goes.
    link.refresh()
    assert link.refused is None


async def test_a_certificate_not_yet_valid_hints_at_the_clock(tmp_path: Path) -> None:
    backoff = RecordingBackoff()
    async with tls_room(tmp_path, valid_from_days=2.0) as room:
        creds = Credentials(room.url, SECRET_TOKEN)

        link = RoomLink(
            fixed(creds),
            lambda m: None,
            backoff=backoff,
            link_retry_max=0.01,
            ssl_context=room.trusting_context(),
        )
        await run_link(link, 0.5)
    assert backoff.caps and set(backoff.caps) == {None}, backoff.caps
    assert link.refused is not None
    assert "not yet valid" in link.refused and "clock" in link.refused, link.refused


async def test_a_failed_tls_handshake_is_reported_and_retried_the_long_way() -> None:
    """The handshake fails on the kiosk's side: plain HTTP where the room URL says https (a
    misconfigured proxy). (A server that rejects the handshake, as for no common protocol
    version, is seen by aiohttp as a connection reset: indistinguishable from the network.)"""
    backoff = RecordingBackoff()
    async with serve(web.Application()) as port:
        creds = Credentials(f"https://127.0.0.1:{port}", SECRET_TOKEN)
        link = RoomLink(fixed(creds), lambda m: None, backoff=backoff, link_retry_max=0.01)
        await run_link(link, 0.5)
    assert backoff.caps and set(backoff.caps) == {None}, backoff.caps
    assert link.refused is not None and "TLS handshake" in link.refused, link.refused


def test_a_tls_connection_cut_mid_handshake_is_a_network_failure() -> None:
    """An EOF during the handshake is what a network going down looks like: not reported as a
    TLS problem (the short backoff brings the kiosk back soon after the network)."""
    assert tls_problem(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")) is None
    assert tls_problem(ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed")) is None
    assert tls_problem(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")) is not None


async def test_a_trusted_certificate_reaches_the_service(tmp_path: Path) -> None:
    """The control: the same server, its certificate trusted, is reached (and refuses with its
    503), so the tests above fail on the certificate and nothing else."""
    async with tls_room(tmp_path) as room:
        creds = Credentials(room.url, SECRET_TOKEN)

        link = RoomLink(
            fixed(creds), lambda m: None, backoff=RecordingBackoff(), ssl_context=room.trusting_context()
        )
        await run_link(link, 0.3)
    assert link.refused is not None and "503" in link.refused and "certificate" not in link.refused


async def test_a_bad_certificate_degrades_the_publishers_health(
    tmp_path: Path, run_dir: Path, bus_factory: Callable[[str], Awaitable[BusClient]]
) -> None:
    async with tls_room(tmp_path) as room:
        creds = Credentials(room.url, SECRET_TOKEN)

        service = PublisherService(await bus_factory("publisher"), publisher_config(run_dir), fixed(creds))
        service.link.backoff = Backoff(initial=0.05, maximum=0.2)
        assert not service.status()[1]
        task = asyncio.ensure_future(service.link.run())
        try:
            await wait_until(lambda: service.status()[1], "a degraded status")
            text = service.status()[0]
            assert text.startswith("room: ") and "TLS certificate" in text, text
            assert SECRET_TOKEN not in text
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await service.aclose()
