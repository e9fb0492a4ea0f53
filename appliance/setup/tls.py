"""HTTPS for the setup page: a self-signed certificate, made once at first start.

<state_dir>/setup-tls/key.pem (0600) and cert.pem: an ECDSA P-256 key and a certificate for
the kiosk's host names (hostname, hostname.local, localhost) and loopback, valid ten years.
Made with the `cryptography` package where installed (it comes with aiortc), else with the
openssl command. Browsers warn about a self-signed certificate; the About page shows its
SHA-256 fingerprint so the technician can check it is this kiosk's.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

from appliance.atomic import atomic_write
from appliance.errors import StateError

DIR = "setup-tls"
VALID_DAYS = 3650


def paths(state_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    d = Path(state_dir) / DIR
    return d / "cert.pem", d / "key.pem"


def host_names() -> list[str]:
    name = socket.gethostname() or "appliance"
    return sorted({name, f"{name}.local", "localhost"})


def _with_cryptography(common_name: str, names: list[str], ips: list[str]) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
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


def ensure_certificate(
    state_dir: str | os.PathLike[str], extra_ips: list[str] | None = None
) -> tuple[Path, Path]:
    """The certificate and key, made now if missing. Returns (cert path, key path)."""
    cert_path, key_path = paths(state_dir)
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    names = host_names()
    ips = sorted({"127.0.0.1", *(extra_ips or [])})
    try:
        cert, key = _with_cryptography(names[0], names, ips)
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
