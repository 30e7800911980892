"""Column helpers and mixins shared by every table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.db import TenantScoped


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A new random primary key."""
    return uuid.uuid4()


def TimestampField(*, nullable: bool = False, index: bool = False, default_now: bool = True) -> Any:
    """A `timestamptz` column (sqlmodel's default DateTime is naive)."""
    if default_now:
        return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=nullable, index=index)
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=nullable, index=index)


def JsonField(*, default_factory: Any = dict, nullable: bool = False) -> Any:
    """A JSONB column."""
    return Field(default_factory=default_factory, sa_type=JSONB, nullable=nullable)


class IdMixin(SQLModel):
    """UUID primary key."""

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)


class TimestampsMixin(SQLModel):
    """created_at / updated_at, both timestamptz."""

    created_at: datetime = TimestampField(index=True)
    updated_at: datetime = TimestampField(index=True)


class VersionMixin(SQLModel):
    """A counter bumped on every update; it is the ETag of the row."""

    version: int = Field(default=1, nullable=False)


class TenantMixin(TenantScoped, SQLModel):
    """org_id on a tenant table; queries are scoped by it (see app.db)."""

    # Filled from the session's organisation on flush (app.db), so constructors need not pass it.
    org_id: uuid.UUID = Field(default=None, foreign_key="organisations.id", index=True, ondelete="CASCADE")
