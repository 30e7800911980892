"""Accounts (customer companies) and contacts (people at them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import ForeignKeyConstraint, Numeric, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, JsonField, TenantMixin, TimestampField, TimestampsMixin, VersionMixin
from app.models.common import CountryCode, CurrencyCode, EmailAddress


class Account(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A customer company. Every member of the organisation may read accounts (they are shared)."""

    __tablename__ = "accounts"
    __table_args__ = (
        # Until the tenant-key migration gives accounts the primary key (org_id, id).
        UniqueConstraint("org_id", "id"),
        ForeignKeyConstraint(
            ["org_id", "dunning_policy_id"],
            ["dunning_policies.org_id", "dunning_policies.id"],
            name="fk_accounts_dunning_policy_id_dunning_policies",
        ),
    )

    name: str = Field(max_length=300, index=True)
    domain: str | None = Field(default=None, max_length=255)
    industry: str | None = Field(default=None, max_length=200)
    country: str | None = Field(default=None, max_length=2)
    phone: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=1000)
    owner_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", index=True, ondelete="SET NULL")
    credit_limit: Decimal | None = Field(default=None, sa_type=Numeric(18, 4))
    credit_currency: str | None = Field(default=None, max_length=3)
    credit_rating: str | None = Field(default=None, max_length=16)
    attributes: dict[str, Any] = JsonField()
    # Collections (回款): where reminders go, the account's own dunning policy, the legal-notice
    # flag a dunning step sets, and the rating before the last change (a drop is a risk).
    billing_email: str | None = Field(default=None, max_length=320)
    dunning_policy_id: uuid.UUID | None = None
    legal_notice: bool = Field(default=False)
    legal_notice_at: datetime | None = TimestampField(nullable=True, default_now=False)
    credit_rating_previous: str | None = Field(default=None, max_length=16)


class AccountCreate(SQLModel):
    """POST /v1/accounts."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str = Field(min_length=1, max_length=300)
    domain: str | None = Field(default=None, max_length=255)
    industry: str | None = Field(default=None, max_length=200)
    country: CountryCode | None = None
    phone: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=1000)
    owner_id: uuid.UUID | None = None
    credit_limit: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    credit_currency: CurrencyCode | None = None
    credit_rating: str | None = Field(default=None, max_length=16)
    attributes: dict[str, Any] = Field(default_factory=dict)
    billing_email: EmailAddress | None = None
    dunning_policy_id: uuid.UUID | None = None


class AccountUpdate(SQLModel):
    """PATCH /v1/accounts/{id}: only what is sent changes."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str | None = Field(default=None, min_length=1, max_length=300)
    domain: str | None = Field(default=None, max_length=255)
    industry: str | None = Field(default=None, max_length=200)
    country: CountryCode | None = None
    phone: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=1000)
    owner_id: uuid.UUID | None = None
    credit_limit: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    credit_currency: CurrencyCode | None = None
    credit_rating: str | None = Field(default=None, max_length=16)
    attributes: dict[str, Any] | None = None
    billing_email: EmailAddress | None = None
    dunning_policy_id: uuid.UUID | None = None
    legal_notice: bool | None = None


class AccountRead(SQLModel):
    """An account as the API shows it."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    domain: str | None
    industry: str | None
    country: str | None
    phone: str | None
    address: str | None
    owner_id: uuid.UUID | None
    credit_limit: Decimal | None
    credit_currency: str | None
    credit_rating: str | None
    attributes: dict[str, Any]
    billing_email: str | None = None
    dunning_policy_id: uuid.UUID | None = None
    legal_notice: bool = False
    legal_notice_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    version: int


class Contact(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A person, usually at an account."""

    __tablename__ = "contacts"

    account_id: uuid.UUID | None = Field(
        default=None, foreign_key="accounts.id", index=True, ondelete="SET NULL"
    )
    name: str = Field(max_length=300)
    email: str | None = Field(default=None, max_length=320, index=True)
    phone: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)
    owner_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", index=True, ondelete="SET NULL")
    attributes: dict[str, Any] = JsonField()


class ContactCreate(SQLModel):
    """POST /v1/contacts."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str = Field(min_length=1, max_length=300)
    account_id: uuid.UUID | None = None
    email: EmailAddress | None = None
    phone: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)
    owner_id: uuid.UUID | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class ContactUpdate(SQLModel):
    """PATCH /v1/contacts/{id}."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: str | None = Field(default=None, min_length=1, max_length=300)
    account_id: uuid.UUID | None = None
    email: EmailAddress | None = None
    phone: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)
    owner_id: uuid.UUID | None = None
    attributes: dict[str, Any] | None = None


class ContactRead(SQLModel):
    """A contact as the API shows it."""

    id: uuid.UUID
    org_id: uuid.UUID
    account_id: uuid.UUID | None
    name: str
    email: str | None
    phone: str | None
    title: str | None
    owner_id: uuid.UUID | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int
