"""Provider request authentication: Mailgun's HMAC signature and Postmark's HTTP Basic credentials."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

from app.services.intake.email_inbound._model import EmailSignatureError

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


def verify_mailgun_signature(
    *,
    signing_key: str,
    timestamp: str,
    token: str,
    signature: str,
    now: float | None = None,
    tolerance_seconds: int = 900,
) -> None:
    """Check hex(HMAC-SHA256(signing_key, timestamp + token)) == signature and the timestamp is fresh."""
    if not signing_key:
        raise EmailSignatureError("no signing key configured")
    if not timestamp or not token or not signature:
        raise EmailSignatureError("timestamp, token and signature are all required")
    if not timestamp.isascii() or not timestamp.isdigit():
        raise EmailSignatureError("timestamp is not a Unix time in seconds")
    candidate = signature.strip().lower()
    if not _HEX_SHA256.fullmatch(candidate):
        raise EmailSignatureError("signature is not a hex SHA-256 digest")
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, candidate):
        raise EmailSignatureError("signature does not match")
    # Checked after the HMAC so that an attacker learns nothing about our clock from the error.
    current = time.time() if now is None else now
    age = current - int(timestamp)
    if age > tolerance_seconds:
        raise EmailSignatureError(f"timestamp is stale ({int(age)} s old, tolerance {tolerance_seconds} s)")
    if age < -tolerance_seconds:
        raise EmailSignatureError(f"timestamp is {int(-age)} s in the future")


def check_basic_auth(authorization_header: str | None, *, username: str, password: str) -> bool:
    """True when the Authorization header carries exactly these Basic credentials (constant-time)."""
    if not authorization_header or not username:
        return False
    scheme, _, encoded = authorization_header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_user, sep, given_password = decoded.partition(b":")
    if not sep:
        return False
    # Both comparisons always run, so timing does not reveal which half was wrong.
    user_ok = hmac.compare_digest(given_user, username.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    return user_ok & password_ok
