"""API keys: a user's own, or any user's for an admin; scopes never exceed the user's role."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, Forbidden, ValidationFailed
from app.models.api_key import SCOPES, ApiKey, ApiKeyCreate
from app.models.base import utcnow
from app.pagination import PageParams, paginate
from app.security import Principal, narrow_scopes, new_api_key
from app.services import audit
from app.services.common import get_or_404
from app.services.users import get_user


def _visible(principal: Principal, key: ApiKey) -> bool:
    return principal.is_admin or key.user_id == principal.user_id


async def list_keys(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    user_id: uuid.UUID | None = None,
    include_revoked: bool = False,
) -> tuple[list[ApiKey], str | None]:
    """Your keys; an admin sees everyone's."""
    stmt = select(ApiKey)
    if not principal.is_admin:
        stmt = stmt.where(col(ApiKey.user_id) == principal.user_id)
    if user_id is not None:
        stmt = stmt.where(col(ApiKey.user_id) == user_id)
    if not include_revoked:
        stmt = stmt.where(col(ApiKey.revoked_at).is_(None))
    return await paginate(
        session,
        stmt,
        page,
        id_column=ApiKey.id,
        sortable={"created_at": ApiKey.created_at},
    )


async def get_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """One key you may see (others' keys look absent)."""
    key = await get_or_404(session, ApiKey, key_id, what="API key")
    if not _visible(principal, key):
        raise Forbidden("This API key belongs to another user.")
    return key


async def create_key(session: AsyncSession, principal: Principal, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    """Issue a key for yourself, or (admins) for any user; returns the row and the token."""
    owner_id = data.user_id or principal.user_id
    if owner_id != principal.user_id and not principal.is_admin:
        raise Forbidden("Only an admin can create keys for other users.")
    owner = await get_user(session, owner_id)
    if not owner.active:
        raise ValidationFailed(
            "The user is deactivated.",
            errors=[FieldError(field="user_id", code="inactive", message="user is deactivated")],
        )
    unknown = [s for s in data.scopes or [] if s not in SCOPES]
    if unknown:
        raise ValidationFailed(
            f"Unknown scope(s): {', '.join(unknown)}.",
            errors=[FieldError(field="scopes", code="unknown_scope", message=", ".join(unknown))],
        )
    scopes = narrow_scopes(data.scopes, owner.role)
    if principal.api_key_id is not None and "*" not in principal.scopes:
        # A narrowed key cannot mint a broader one.
        scopes = [s for s in scopes if principal.allows(s)] or []
        if not scopes:
            raise Forbidden("This key cannot grant any of the requested scopes.")
    token, prefix, digest = new_api_key()
    key = ApiKey(user_id=owner.id, name=data.name, prefix=prefix, key_hash=digest, scopes=scopes)
    session.add(key)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="api_key",
        entity_id=key.id,
        action="create",
        changes={
            "user_id": [None, str(owner.id)],
            "name": [None, key.name],
            "scopes": [None, scopes],
        },
    )
    return key, token


async def revoke_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key at once (idempotent)."""
    key = await get_key(session, principal, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.updated_at = key.revoked_at
        audit.record(session, actor=principal, entity="api_key", entity_id=key.id, action="revoke")
        await session.flush()
    return key
