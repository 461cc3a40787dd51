"""Broker credentials in Mosquitto's own password-file format, so `mosquitto -c` accepts our export.

`$7$<iterations>$<base64 salt>$<base64 key>`: PBKDF2-HMAC-SHA512 with a 12-byte salt and a 64-byte key,
which is what `mosquitto_passwd` writes (verified byte for byte in tests/test_services_harness.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101  # mosquitto_passwd's default


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(12) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify(password: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt, key = stored.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations),
                                     dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
