"""Credentials: API key tokens (SHA-256 at rest), password hashes (Argon2id), JWTs (HS256)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

from app.models.common import Role

API_KEY_PREFIX = "ldk_"
JWT_ALGORITHM = "HS256"
JWT_AUDIENCE = "loudou"

_passwords = PasswordHash.recommended()


def new_api_key() -> tuple[str, str, str]:
    """A fresh token, its display prefix and its SHA-256 (the token itself is never stored)."""
    token = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return token, token[:12], hash_token(token)


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token; enough for keys, which are not guessable passwords."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """Argon2id hash of a password."""
    return _passwords.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether the password matches; a missing hash never matches."""
    if not password_hash:
        # Spend the same time as a real check so a missing user is not detectable by timing.
        _passwords.verify(password, _DUMMY_HASH)
        return False
    return _passwords.verify(password, password_hash)


_DUMMY_HASH = _passwords.hash(secrets.token_urlsafe(16))

# Argon2 takes 64 MiB and tens of milliseconds per call: run it in a thread so the event loop keeps
# serving, and at most this many at once per process so a login flood cannot exhaust CPU or memory.
HASH_CONCURRENCY = 2
_hash_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _hash_slots.get(loop)
    if slots is None:
        slots = _hash_slots[loop] = asyncio.Semaphore(HASH_CONCURRENCY)
    return slots


async def hash_password_async(password: str) -> str:
    """hash_password off the event loop, behind the per-process hashing semaphore."""
    async with _slots():
        return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, password_hash: str | None) -> bool:
    """verify_password off the event loop, behind the per-process hashing semaphore."""
    async with _slots():
        return await asyncio.to_thread(verify_password, password, password_hash)


def issue_jwt(
    *,
    user_id: uuid.UUID,
    org_id: uuid.UUID,
    secret: str,
    ttl_seconds: int,
    password_hash: str | None = None,
) -> tuple[str, datetime]:
    """A signed access token for a user, and when it expires; it carries a fingerprint of the
    user's password hash, so changing the password ends the tokens issued before."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_seconds)
    claims = {
        "sub": str(user_id),
        "org": str(org_id),
        "aud": JWT_AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": secrets.token_hex(8),
        "pwd": password_fingerprint(password_hash, secret=secret),
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM), expires


def password_fingerprint(password_hash: str | None, *, secret: str) -> str:
    """A short keyed digest of a password hash (the hash itself never goes into a token)."""
    digest = hmac.new(secret.encode(), (password_hash or "").encode(), hashlib.sha256).hexdigest()
    return digest[:16]


def decode_jwt(token: str, *, secret: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(user_id, org_id) from a valid token, else None."""
    claims = jwt_claims(token, secret=secret)
    return (claims[0], claims[1]) if claims else None


def jwt_claims(token: str, *, secret: str) -> tuple[uuid.UUID, uuid.UUID, str | None] | None:
    """(user_id, org_id, password fingerprint) from a valid token, else None."""
    try:
        claims = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], audience=JWT_AUDIENCE)
        fingerprint = claims.get("pwd")
        return (
            uuid.UUID(claims["sub"]),
            uuid.UUID(claims["org"]),
            str(fingerprint) if fingerprint is not None else None,
        )
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        return None


READ_ONLY_ROLES = frozenset({Role.viewer})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, possibly through an API key whose scopes narrow what they may do."""

    user_id: uuid.UUID
    org_id: uuid.UUID
    role: Role
    team_id: uuid.UUID | None
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"*"}))
    finance: bool = False

    @property
    def is_admin(self) -> bool:
        """Admins may do everything in their organisation."""
        return self.role == Role.admin

    @property
    def is_finance(self) -> bool:
        """The finance permission (confirm payments): admins always, other roles by the user's
        `finance` flag, viewers never."""
        return self.is_admin or (self.finance and self.role not in READ_ONLY_ROLES)

    def allows(self, scope: str) -> bool:
        """Whether role and key scopes both allow `scope` (e.g. "users:write")."""
        resource, _, action = scope.partition(":")
        if action != "read" and self.role in READ_ONLY_ROLES:
            return False
        if "*" in self.scopes or scope in self.scopes:
            return True
        return action == "read" and ("read" in self.scopes or f"{resource}:write" in self.scopes)


def narrow_scopes(requested: list[str] | None, role: Role) -> list[str]:
    """The scopes a key for a user of `role` gets: omitted means all; a viewer's are read-only."""
    scopes = sorted(set(requested or ["*"]))
    if role in READ_ONLY_ROLES:
        narrowed = []
        for s in scopes:
            if s in ("*", "read"):
                narrowed.append("read")
            elif s.endswith(":read"):
                narrowed.append(s)
            elif s.endswith(":write"):
                narrowed.append(s.replace(":write", ":read"))
        scopes = sorted(set(narrowed))
    return scopes
