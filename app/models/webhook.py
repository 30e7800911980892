"""Outbound webhooks: subscriptions, one delivery per (subscription, event), every attempt logged."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, field_validator
from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models.base import (
    IdMixin,
    JsonField,
    TenantMixin,
    TimestampField,
    TimestampsMixin,
    VersionMixin,
    tenant_fk,
)
from app.models.common import Input, Patch

DELIVERY_STATUSES = ("pending", "in_flight", "retrying", "succeeded", "failed")


class WebhookSubscription(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """Where to POST which events. The secret signs deliveries (Standard Webhooks)."""

    __tablename__ = "webhook_subscriptions"

    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=500)
    event_types: list[str] = JsonField(default_factory=lambda: ["*"])
    filter: dict[str, Any] = JsonField()
    # Kept in the clear because it must sign every delivery (as Svix and Stripe do); shown once.
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_expires_at: datetime | None = TimestampField(nullable=True, default_now=False)
    active: bool = Field(default=True)
    disabled_reason: str | None = Field(default=None, max_length=500)


class WebhookDelivery(IdMixin, TenantMixin, table=True):
    """One event for one subscription; its id is the `webhook-id` the receiver sees on every try."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("org_id", "subscription_id", "outbox_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'retrying', 'in_flight')"),
        ),
        tenant_fk("webhook_deliveries", "subscription_id", "webhook_subscriptions", ondelete="CASCADE"),
    )

    subscription_id: uuid.UUID = Field(index=True)
    outbox_id: uuid.UUID = Field(index=True)
    event_type: str = Field(max_length=100)
    payload: dict[str, Any] = JsonField()
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = TimestampField()
    locked_until: datetime | None = TimestampField(nullable=True, default_now=False)
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = TimestampField(index=True)
    succeeded_at: datetime | None = TimestampField(nullable=True, default_now=False)


class WebhookAttempt(IdMixin, TenantMixin, table=True):
    """One HTTP try of a delivery: when, what came back, how long it took."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (tenant_fk("webhook_attempts", "delivery_id", "webhook_deliveries", ondelete="CASCADE"),)

    delivery_id: uuid.UUID = Field(index=True)
    number: int
    at: datetime = TimestampField()
    status_code: int | None = Field(default=None)
    response_body: str | None = Field(default=None, max_length=2000)
    error: str | None = Field(default=None, max_length=2000)
    duration_ms: int = Field(default=0)


def _check_event_types(value: list[str] | None) -> list[str] | None:
    from app.models.events import EVENT_TYPES

    if value is None:
        return None
    unknown = [v for v in value if v != "*" and v not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
    if not value:
        raise ValueError("at least one event type (or '*')")
    return sorted(set(value))


class WebhookSubscriptionCreate(Input):
    """POST /v1/webhook-subscriptions."""

    url: AnyHttpUrl
    description: str = Field(default="", max_length=500)
    event_types: list[str] = Field(default_factory=lambda: ["*"])
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description="Top-level fields of the event's data that must equal these values.",
    )

    _types = field_validator("event_types")(_check_event_types)


class WebhookSubscriptionUpdate(Patch):
    """PATCH /v1/webhook-subscriptions/{id}; `active: true` re-enables a disabled one."""

    url: AnyHttpUrl | None = None
    description: str | None = Field(default=None, max_length=500)
    event_types: list[str] | None = None
    filter: dict[str, Any] | None = None
    active: bool | None = None

    _types = field_validator("event_types")(_check_event_types)


class WebhookSubscriptionRead(SQLModel):
    """A subscription without its secret."""

    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    filter: dict[str, Any]
    active: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int


class WebhookSubscriptionWithSecret(WebhookSubscriptionRead):
    """The answer to create and rotate: the only time the secret is shown."""

    secret: str


class WebhookAttemptRead(SQLModel):
    """One try."""

    number: int
    at: datetime
    status_code: int | None
    response_body: str | None
    error: str | None
    duration_ms: int


class WebhookDeliveryRead(SQLModel):
    """A delivery with its attempts."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    outbox_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    succeeded_at: datetime | None
    attempt_log: list[WebhookAttemptRead] = []
