"""The audit-log helper: one row per change, in the same transaction as the change."""

from __future__ import annotations

import uuid
from typing import Any

from asgi_correlation_id import correlation_id
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.audit import AuditEntry
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
    entry = AuditEntry(
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
