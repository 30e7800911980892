"""The transactional outbox and the record of job runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, text
from sqlmodel import Field

from app.models.base import IdMixin, JsonField, TenantMixin, TimestampField


class OutboxEvent(IdMixin, TenantMixin, table=True):
    """An event written in the same transaction as the change; the relay turns it into jobs."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_pending",
            "available_at",
            "id",
            postgresql_where=text("dispatched_at IS NULL"),
        ),
    )

    event_type: str = Field(max_length=100)  # not indexed: nothing looks events up by type
    payload: dict[str, Any] = JsonField()
    created_at: datetime = TimestampField()
    available_at: datetime = TimestampField()
    dispatched_at: datetime | None = TimestampField(nullable=True, default_now=False)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=2000)


class JobRun(TenantMixin, table=True):
    """One row per job key: how often it ran. Jobs record here in their own transaction."""

    __tablename__ = "job_runs"

    job_key: str = Field(primary_key=True, max_length=200)
    job_name: str = Field(max_length=100, index=True)
    outbox_id: uuid.UUID | None = Field(default=None, index=True)
    runs: int = Field(default=1)
    first_run_at: datetime = TimestampField()
    last_run_at: datetime = TimestampField()
