"""Secrets the room service hands out, and how it stores them.

Every bearer secret (device tokens, device codes, invites, sessions) is random with at least
128 bits and is stored only as its SHA-256: they are high-entropy, so a fast hash suffices and a
copy of the database grants nothing. The user code a kiosk shows is short on purpose (typed by
a person); what protects it is its lifetime and the limit on wrong entries, not its entropy.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

# RFC 8628 section 6.1: consonants only (no vowels, so no words), no easily confused letters.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
_NOT_ALNUM = re.compile(r"[\W_]+")


def new_token(nbytes: int = 32, prefix: str = "") -> str:
    """URL-safe random text; 32 bytes = 256 bits."""
    return prefix + secrets.token_urlsafe(nbytes)


def new_id(prefix: str) -> str:
    """A short random identifier for URLs (not a secret)."""
    return prefix + secrets.token_hex(6)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    """BCDFGHJK -> BCDF-GHJK, as shown on the kiosk."""
    half = USER_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_user_code(entry: str) -> str | None:
    """What an admin typed -> the stored form, or None if it cannot be a code. Case, spaces and
    punctuation are ignored; letters outside the alphabet (vowels, digits) make it invalid."""
    code = _NOT_ALNUM.sub("", entry).upper()
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def sign(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 of the parts, hex: CSRF tokens bound to a session."""
    mac = hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256)
    return mac.hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
