"""API keys: hashed at rest, shown once, scoped, revocable."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from app.models import examples as ex
from app.models.base import IdMixin, JsonField, TenantMixin, TimestampField, TimestampsMixin, tenant_fk
from app.models.common import Input

SCOPES = (
    "*",
    "read",
    "users:read",
    "users:write",
    "teams:read",
    "teams:write",
    "api_keys:read",
    "api_keys:write",
    "organisation:read",
    "organisation:write",
    "settings:read",
    "settings:write",  # routing and scoring rules: who gets which lead, how it is ranked
    "leads:read",
    "leads:write",
    "accounts:read",
    "accounts:write",
    "pipelines:read",
    "pipelines:write",
    "products:read",
    "products:write",
    "deals:read",
    "deals:write",
    "quotes:read",
    "quotes:write",
    "orders:read",
    "orders:write",
    "payments:read",
    "payments:write",
    "dunning:read",
    "dunning:write",
    "intake",
    "audit:read",
    "webhooks:read",
    "webhooks:write",
    "intake:read",
    "intake:write",
    "metrics:read",
    "export:read",
)


class ApiKey(IdMixin, TenantMixin, TimestampsMixin, table=True):
    """An API key acts as its user, narrowed by its scopes. Only the SHA-256 of the token is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (tenant_fk("api_keys", "user_id", "users", ondelete="CASCADE"),)

    user_id: uuid.UUID = Field(index=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16)
    # Global exception to "every unique key includes org_id" (tests/test_schema_keys.py): a bearer
    # token is looked up before its organisation is known, and a hash must name one key across
    # all organisations. On Citus this table is a reference table (docs/scale.md).
    key_hash: str = Field(max_length=64, unique=True)
    scopes: list[str] = JsonField(default_factory=lambda: ["*"])
    last_used_at: datetime | None = TimestampField(nullable=True, default_now=False)
    revoked_at: datetime | None = TimestampField(nullable=True, default_now=False)


class ApiKeyCreate(Input):
    """POST /v1/api-keys: omitted user_id means yourself; omitted scopes mean ["*"]."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.API_KEY_CREATE))

    name: str = Field(min_length=1, max_length=200)
    user_id: uuid.UUID | None = None
    scopes: list[str] | None = None


class ApiKeyRead(SQLModel):
    """An API key without its secret."""

    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """The answer to a create: the only time the token is shown."""

    key: str
