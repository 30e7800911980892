"""The audit log: who changed what, when, through which key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, JsonField, TenantMixin, TimestampField


class AuditEntry(IdMixin, TenantMixin, table=True):
    """One change to one entity, with the field diff {field: [old, new]}."""

    __tablename__ = "audit_log"

    at: datetime = TimestampField(index=True)
    actor_user_id: uuid.UUID | None = Field(default=None, index=True)
    actor_api_key_id: uuid.UUID | None = Field(default=None)
    entity: str = Field(max_length=64, index=True)
    entity_id: uuid.UUID = Field(index=True)
    action: str = Field(max_length=32)
    changes: dict[str, Any] = JsonField()
    request_id: str | None = Field(default=None, max_length=64)


class AuditEntryRead(SQLModel):
    """An audit entry as the API shows it."""

    id: uuid.UUID
    at: datetime
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    entity: str
    entity_id: uuid.UUID
    action: str
    changes: dict[str, Any]
    request_id: str | None
