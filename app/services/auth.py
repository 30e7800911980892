"""Who is calling: API keys, JWT access tokens, password login."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Unauthorized, ValidationFailed
from app.models.api_key import ApiKey
from app.models.base import utcnow
from app.models.user import User
from app.security import (
    API_KEY_PREFIX,
    Principal,
    hash_token,
    issue_jwt,
    jwt_claims,
    password_fingerprint,
    verify_password_async,
)
from app.services.login_guard import LoginGuard

LAST_USED_RESOLUTION = timedelta(minutes=1)


async def authenticate(session: AsyncSession, token: str, *, secret: str) -> Principal | None:
    """The principal behind an API key or a JWT, or None. Inactive users and revoked keys fail."""
    if token.startswith(API_KEY_PREFIX):
        return await _from_api_key(session, token)
    decoded = jwt_claims(token, secret=secret)
    if decoded is None:
        return None
    user_id, org_id, fingerprint = decoded
    user = (
        await session.execute(
            select(User)
            .where(col(User.id) == user_id, col(User.org_id) == org_id)
            .execution_options(cross_tenant=True)
        )
    ).scalar_one_or_none()
    if user is None or not user.active:
        return None
    if fingerprint is not None and fingerprint != password_fingerprint(user.password_hash, secret=secret):
        return None  # issued before the password last changed (tokens without one expire within the TTL)
    return Principal(
        user_id=user.id, org_id=user.org_id, role=user.role, team_id=user.team_id, finance=user.finance
    )


async def _from_api_key(session: AsyncSession, token: str) -> Principal | None:
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, (col(User.org_id) == ApiKey.org_id) & (col(User.id) == ApiKey.user_id))
            .where(col(ApiKey.key_hash) == hash_token(token))
            .execution_options(cross_tenant=True)
        )
    ).one_or_none()
    if row is None:
        return None
    key, user = row
    if key.revoked_at is not None or not user.active:
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        # Written at most once a minute per key, so reads stay cheap.
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.org_id) == key.org_id, col(ApiKey.id) == key.id)
            .values(last_used_at=now)
            .execution_options(cross_tenant=True)
        )
    return Principal(
        user_id=user.id,
        org_id=user.org_id,
        role=user.role,
        team_id=user.team_id,
        api_key_id=key.id,
        scopes=frozenset(key.scopes),
        finance=user.finance,
    )


async def login(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    org_id: uuid.UUID | None,
    secret: str,
    ttl_seconds: int,
    guard: LoginGuard | None = None,
) -> tuple[str, int]:
    """Check a password and issue a JWT; the same email in several organisations needs org_id.

    With a guard, a locked email or address is refused (429) before anything is hashed, and the
    outcome is counted for the backoff."""
    if guard is not None:
        await guard.check()
    try:
        user = await _check_password(session, email=email, password=password, org_id=org_id)
    except Unauthorized:
        if guard is not None:
            await guard.failed()
        raise
    if guard is not None:
        await guard.succeeded()
    await session.execute(
        update(User)
        .where(col(User.org_id) == user.org_id, col(User.id) == user.id)
        .values(last_login_at=utcnow())
        .execution_options(cross_tenant=True)
    )
    token, _ = issue_jwt(
        user_id=user.id,
        org_id=user.org_id,
        secret=secret,
        ttl_seconds=ttl_seconds,
        password_hash=user.password_hash,
    )
    return token, ttl_seconds


async def _check_password(
    session: AsyncSession, *, email: str, password: str, org_id: uuid.UUID | None
) -> User:
    stmt = select(User).where(col(User.email) == email.strip().lower()).execution_options(cross_tenant=True)
    if org_id is not None:
        stmt = stmt.where(col(User.org_id) == org_id)
    users = list((await session.execute(stmt.limit(2))).scalars())
    if len(users) > 1:
        raise ValidationFailed("This email belongs to several organisations; send `organisation_id` too.")
    user = users[0] if users else None
    if not await verify_password_async(password, user.password_hash if user else None) or user is None:
        raise Unauthorized("Wrong email or password.")
    if not user.active:
        raise Unauthorized("This user is deactivated.")
    return user
