"""The audit-log helper: one row per change, in the same transaction as the change."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from asgi_correlation_id import correlation_id
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Forbidden
from app.models.audit import AuditEntry
from app.models.base import build
from app.pagination import PageParams, paginate
from app.security import Principal


def record(
    session: AsyncSession,
    *,
    actor: Principal | None,
    entity: str,
    entity_id: uuid.UUID,
    action: str,
    changes: dict[str, Any] | None = None,
    org_id: uuid.UUID | None = None,
) -> AuditEntry:
    """Add an audit entry (who, what, field diff, request id) to the session."""
    entry = build(
        AuditEntry,
        entity=entity,
        entity_id=entity_id,
        action=action,
        changes=changes or {},
        actor_user_id=actor.user_id if actor else None,
        actor_api_key_id=actor.api_key_id if actor else None,
        request_id=correlation_id.get(),
    )
    if org_id is not None:
        entry.org_id = org_id
    elif actor is not None:
        entry.org_id = actor.org_id
    session.add(entry)
    return entry


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    entity: str | None = None,
    entity_id: uuid.UUID | None = None,
    actor_user_id: uuid.UUID | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[AuditEntry], str | None]:
    """The organisation's audit trail, newest first (admins only)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can read the audit log.")
    stmt = select(AuditEntry)
    if entity:
        stmt = stmt.where(col(AuditEntry.entity) == entity)
    if entity_id:
        stmt = stmt.where(col(AuditEntry.entity_id) == entity_id)
    if actor_user_id:
        stmt = stmt.where(col(AuditEntry.actor_user_id) == actor_user_id)
    if action:
        stmt = stmt.where(col(AuditEntry.action) == action)
    if since:
        stmt = stmt.where(col(AuditEntry.at) >= since)
    if until:
        stmt = stmt.where(col(AuditEntry.at) < until)
    return await paginate(
        session,
        stmt,
        page,
        id_column=col(AuditEntry.id),
        sortable={"at": col(AuditEntry.at)},
        default_sort="-at",
    )
