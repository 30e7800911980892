"""Intake sources (forms, email, webhooks) and the inbox of inbound events."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, field_validator
from sqlalchemy import Index, LargeBinary, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models import examples as ex
from app.models.base import (
    IdMixin,
    JsonField,
    TenantMixin,
    TimestampField,
    TimestampsMixin,
    VersionMixin,
    tenant_fk,
)
from app.models.common import CountryCode, Input, Patch
from app.models.lead import FieldNote


class SourceKind(enum.StrEnum):
    """The three intake endpoints."""

    form = "form"
    email = "email"
    webhook = "webhook"


class EmailProvider(enum.StrEnum):
    """How inbound email reaches the email endpoint."""

    sendgrid = "sendgrid"
    mailgun = "mailgun"
    postmark = "postmark"
    mime = "mime"


class EventStatus(enum.StrEnum):
    """What became of an inbound event."""

    received = "received"
    created = "created"
    merged = "merged"
    activity = "activity"
    spam = "spam"
    duplicate = "duplicate"
    rejected = "rejected"


class SignatureVerdict(enum.StrEnum):
    """The outcome of checking the request's signature or credentials."""

    not_required = "not_required"
    valid = "valid"
    invalid = "invalid"
    stale = "stale"
    missing = "missing"
    replayed = "replayed"


LEAD_FIELDS = (
    "name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "title",
    "country",
    "industry",
    "message",
    "tags",
    "ignore",
)


class IntakeSource(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A configured way in: a web form, an inbound-email route or a signed webhook."""

    __tablename__ = "intake_sources"
    __table_args__ = (
        tenant_fk("intake_sources", "default_owner_id", "users", ondelete="SET NULL"),
        tenant_fk("intake_sources", "default_team_id", "teams", ondelete="SET NULL"),
    )

    kind: SourceKind = Field(sa_type=String(16))
    name: str = Field(max_length=200)
    provider: str | None = Field(default=None, max_length=32)
    # Global exception to "every unique key includes org_id" (tests/test_schema_keys.py): the
    # public key in the intake URL names the source, and so the organisation, before anything
    # else is known. On Citus this table is a reference table (docs/scale.md).
    key: str = Field(max_length=64, unique=True)
    active: bool = Field(default=True)
    field_mapping: dict[str, str] = JsonField()
    default_country: str | None = Field(default=None, max_length=2)
    honeypot_field: str | None = Field(default=None, max_length=100)
    redirect_url: str | None = Field(default=None, max_length=2000)
    allowed_origins: list[str] = JsonField(default_factory=list)
    signing_key: str | None = Field(default=None, max_length=500)
    basic_auth_username: str | None = Field(default=None, max_length=200)
    basic_auth_password: str | None = Field(default=None, max_length=500)
    secret: str | None = Field(default=None, max_length=200)
    previous_secret: str | None = Field(default=None, max_length=200)
    previous_secret_expires_at: datetime | None = TimestampField(nullable=True, default_now=False)
    default_owner_id: uuid.UUID | None = Field(default=None)
    default_team_id: uuid.UUID | None = Field(default=None)
    tags: list[str] = JsonField(default_factory=list)
    rate_limit_per_minute: int = Field(default=600)
    deleted_at: datetime | None = TimestampField(nullable=True, default_now=False)


def _mapping_targets(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    for source_field, target in value.items():
        if target not in LEAD_FIELDS and not target.startswith("attributes."):
            raise ValueError(
                f"{source_field!r} maps to {target!r}; "
                f"use one of {', '.join(LEAD_FIELDS)} or attributes.<name>"
            )
    return value


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("an http(s) URL is required")
    return value


def _origins(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    for origin in value:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError(f"{origin!r} is not an origin like https://example.com")
    return [o.rstrip("/") for o in value]


class IntakeSourceCreate(Input):
    """POST /v1/intake-sources."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.INTAKE_SOURCE_CREATE))

    kind: SourceKind
    name: str = Field(min_length=1, max_length=200)
    provider: EmailProvider | None = None
    field_mapping: dict[str, str] = Field(default_factory=dict)
    default_country: CountryCode | None = None
    honeypot_field: str | None = Field(default=None, min_length=1, max_length=100)
    redirect_url: str | None = Field(default=None, max_length=2000)
    allowed_origins: list[str] = Field(default_factory=list)
    signing_key: str | None = Field(default=None, min_length=1, max_length=500)
    basic_auth_username: str | None = Field(default=None, min_length=1, max_length=200)
    basic_auth_password: str | None = Field(default=None, min_length=1, max_length=500)
    default_owner_id: uuid.UUID | None = None
    default_team_id: uuid.UUID | None = None
    tags: list[str] = Field(default_factory=list)
    rate_limit_per_minute: int = Field(default=600, ge=0, le=1_000_000)

    _mapping = field_validator("field_mapping")(_mapping_targets)
    _allowed = field_validator("allowed_origins")(_origins)
    _redirect = field_validator("redirect_url")(_http_url)


class IntakeSourceUpdate(Patch):
    """PATCH /v1/intake-sources/{id}: only what is sent changes."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.INTAKE_SOURCE_UPDATE))  # type: ignore[assignment]
    not_null = ("field_mapping", "allowed_origins", "tags", "active", "name", "rate_limit_per_minute")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    active: bool | None = None
    field_mapping: dict[str, str] | None = None
    default_country: CountryCode | None = None
    honeypot_field: str | None = Field(default=None, max_length=100)
    redirect_url: str | None = Field(default=None, max_length=2000)
    allowed_origins: list[str] | None = None
    signing_key: str | None = Field(default=None, min_length=1, max_length=500)
    basic_auth_username: str | None = Field(default=None, max_length=200)
    basic_auth_password: str | None = Field(default=None, max_length=500)
    default_owner_id: uuid.UUID | None = None
    default_team_id: uuid.UUID | None = None
    tags: list[str] | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=0, le=1_000_000)

    _mapping = field_validator("field_mapping")(_mapping_targets)
    _allowed = field_validator("allowed_origins")(_origins)
    _redirect = field_validator("redirect_url")(_http_url)


class IntakeSourceRead(SQLModel):
    """A source as the API shows it: the public `key`; secrets are only said to be set."""

    id: uuid.UUID
    org_id: uuid.UUID
    kind: SourceKind
    name: str
    provider: str | None
    key: str
    active: bool
    field_mapping: dict[str, str]
    default_country: str | None
    honeypot_field: str | None
    redirect_url: str | None
    allowed_origins: list[str]
    signing_key_set: bool
    basic_auth_username: str | None
    basic_auth_password_set: bool
    secret_set: bool
    previous_secret_expires_at: datetime | None
    default_owner_id: uuid.UUID | None
    default_team_id: uuid.UUID | None
    tags: list[str]
    rate_limit_per_minute: int
    endpoint: str
    created_at: datetime
    updated_at: datetime
    version: int


class IntakeSourceWithSecret(IntakeSourceRead):
    """The answer to create and rotate-secret: the only time a webhook source's `secret` is shown."""

    secret: str | None


class SecretRotation(Input):
    """POST /v1/intake-sources/{id}/rotate-secret: how long the old secret keeps working."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.SECRET_ROTATION))

    grace_hours: int = Field(default=24, ge=0, le=24 * 30)


class InboundEvent(IdMixin, TenantMixin, table=True):
    """One request to an intake endpoint, stored before anything else, with its outcome."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        # Replays of a provider's event id (webhook-id, Mailgun token) are refused by this key.
        UniqueConstraint("org_id", "source_id", "external_id"),
        Index(
            "ix_inbound_events_org_message_id",
            "org_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        tenant_fk("inbound_events", "source_id", "intake_sources", ondelete="SET NULL"),
        tenant_fk("inbound_events", "lead_id", "leads", ondelete="SET NULL"),
    )

    source_id: uuid.UUID | None = Field(default=None, index=True)
    kind: SourceKind = Field(sa_type=String(16))
    provider: str | None = Field(default=None, max_length=32)
    received_at: datetime = TimestampField(index=True)
    content_type: str | None = Field(default=None, max_length=200)
    headers: dict[str, Any] = JsonField()
    body: bytes | None = Field(default=None, sa_type=LargeBinary)
    body_size: int = Field(default=0)
    external_id: str | None = Field(default=None, max_length=300)
    message_id: str | None = Field(default=None, max_length=998)
    signature: SignatureVerdict = Field(default=SignatureVerdict.not_required, sa_type=String(16))
    status: EventStatus = Field(default=EventStatus.received, sa_type=String(16))
    reason: str | None = Field(default=None, max_length=2000)
    http_status: int | None = Field(default=None)
    lead_id: uuid.UUID | None = Field(default=None, index=True)
    first_event_id: uuid.UUID | None = Field(default=None)
    replays: int = Field(default=0)
    processed_at: datetime | None = TimestampField(nullable=True, default_now=False)


class InboundEventRead(SQLModel):
    """An inbox entry; the raw body is included as text when asked for (`include_body=true`)."""

    id: uuid.UUID
    source_id: uuid.UUID | None
    kind: SourceKind
    provider: str | None
    received_at: datetime
    content_type: str | None
    headers: dict[str, Any]
    body_size: int
    body: str | None = None
    external_id: str | None
    message_id: str | None
    signature: SignatureVerdict
    status: EventStatus
    reason: str | None
    http_status: int | None
    lead_id: uuid.UUID | None
    first_event_id: uuid.UUID | None
    replays: int
    processed_at: datetime | None


class IntakeResult(SQLModel):
    """What an intake endpoint answers (and what a replay returns)."""

    inbound_event_id: uuid.UUID
    status: EventStatus
    lead_id: uuid.UUID | None = None
    activity_id: uuid.UUID | None = None
    possible_duplicate_of: uuid.UUID | None = None
    notes: list[FieldNote] = Field(
        default_factory=list, description="Fields not stored as sent, and why (e.g. an invalid phone)."
    )
