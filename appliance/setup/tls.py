"""HTTPS for the setup page: a self-signed certificate, made once at first start.

<state_dir>/setup-tls/key.pem (0600) and cert.pem: an ECDSA P-256 key and a certificate for
the kiosk's host names (hostname, hostname.local, localhost) and loopback, valid ten years.
Made with the `cryptography` package where installed (it comes with aiortc), else with the
openssl command. Browsers warn about a self-signed certificate; the About page shows its
SHA-256 fingerprint so the technician can check it is this kiosk's.

A Pi has no real-time clock: the first start may run on 1970, or on the image's build date,
until NTP syncs. A certificate valid "ten years from now" made then would have expired long
before any browser saw it, so its validity starts no later than now and ends no earlier than
VALID_DAYS after CLOCK_FLOOR, whatever the clock said. A certificate found expired at start is
made again (logged); one that is only "not yet valid" is kept, since then the clock is behind,
not the certificate: a new one would change the fingerprint browsers remember for nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from appliance.atomic import atomic_write
from appliance.errors import StateError

log = logging.getLogger(__name__)

DIR = "setup-tls"
VALID_DAYS = 3650
# No kiosk runs this firmware before this date: a clock that says otherwise is not set yet.
CLOCK_FLOOR = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
Now = Callable[[], datetime.datetime]


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def validity(now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    """(not before, not after) for a certificate made at `now`, right once the clock is set."""
    return now - datetime.timedelta(minutes=5), max(now, CLOCK_FLOOR) + datetime.timedelta(days=VALID_DAYS)


def paths(state_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    d = Path(state_dir) / DIR
    return d / "cert.pem", d / "key.pem"


def host_names() -> list[str]:
    name = socket.gethostname() or "appliance"
    return sorted({name, f"{name}.local", "localhost"})


def _with_cryptography(
    common_name: str, names: list[str], ips: list[str], now: datetime.datetime
) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = validity(now)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _with_openssl(common_name: str, names: list[str], ips: list[str]) -> tuple[bytes, bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise StateError(
            "cannot make a TLS certificate: neither the cryptography package nor openssl is installed"
        )
    # The fallback only (the cryptography package comes with aiortc): `req -x509` in OpenSSL
    # 3.0 dates the certificate by the system clock, so CLOCK_FLOOR does not apply here.
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{a}" for a in ips])
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        cmd = [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(VALID_DAYS),
            "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={san}",
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise StateError(f"openssl could not make a TLS certificate: {exc}") from None
        return cert.read_bytes(), key.read_bytes()


def _expired(cert_path: Path, now: datetime.datetime) -> bool:
    try:
        from cryptography import x509
    except ImportError:
        return False  # cannot tell: kept, as before
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False  # unreadable: server_context says so clearly
    return cert.not_valid_after_utc < now


def ensure_certificate(
    state_dir: str | os.PathLike[str], extra_ips: list[str] | None = None, *, now: Now = _utc_now
) -> tuple[Path, Path]:
    """The certificate and key, made now if missing or expired. Returns (cert path, key path)."""
    cert_path, key_path = paths(state_dir)
    at = now()
    if cert_path.is_file() and key_path.is_file():
        if not _expired(cert_path, at):
            return cert_path, key_path
        log.warning("the setup page's TLS certificate %s has expired: making a new one", cert_path)
    names = host_names()
    ips = sorted({"127.0.0.1", *(extra_ips or [])})
    try:
        cert, key = _with_cryptography(names[0], names, ips, at)
    except ImportError:
        cert, key = _with_openssl(names[0], names, ips)
    # The key first, 0600 from its first byte (atomic_write sets the mode before writing).
    atomic_write(key_path, key, mode=0o600)
    atomic_write(cert_path, cert, mode=0o644)
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise StateError(f"cannot load the setup page's TLS certificate {cert_path}: {exc}") from None
    return ctx


def fingerprint(cert_path: Path) -> str | None:
    """SHA-256 of the certificate (DER), as browsers show it: AB:CD:..."""
    try:
        der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
