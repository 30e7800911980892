"""Stored first responses for `Idempotency-Key` on POST."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, PrimaryKeyConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, JsonField, TimestampField


class IdempotencyRecord(IdMixin, SQLModel, table=True):
    """Keyed by (caller, key): the caller is an HMAC of its credential, known before auth runs.

    org_id is filled in once the request has been authenticated (it is null for requests that
    never got that far); the record is infrastructure of the HTTP layer, not tenant data. So its
    keys carry the caller, not the organisation: every key starts with caller_hash, which is its
    distribution column on Citus (docs/scale.md), and every look-up names it.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (PrimaryKeyConstraint("caller_hash", "id"), UniqueConstraint("caller_hash", "key"))

    caller_hash: str = Field(max_length=64, primary_key=True)
    key: str = Field(max_length=255)
    org_id: uuid.UUID | None = Field(
        default=None, foreign_key="organisations.id", index=True, ondelete="CASCADE"
    )
    method: str = Field(max_length=10)
    path: str = Field(max_length=2000)
    request_hash: str = Field(max_length=64)
    response_status: int | None = Field(default=None)
    response_headers: list[Any] = JsonField(default_factory=list)
    response_body: bytes | None = Field(default=None, sa_type=LargeBinary)
    created_at: datetime = TimestampField(index=True)
    locked_until: datetime | None = TimestampField(nullable=True, default_now=False)
