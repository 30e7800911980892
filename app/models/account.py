"""Accounts (customer companies) and contacts (people at them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import Numeric
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
from app.models.common import CountryCode, CurrencyCode, EmailAddress, Input, Patch


class Account(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A customer company. Every member of the organisation may read accounts (they are shared)."""

    __tablename__ = "accounts"
    __table_args__ = (
        tenant_fk("accounts", "owner_id", "users", ondelete="SET NULL"),
        tenant_fk("accounts", "dunning_policy_id", "dunning_policies", ondelete="SET NULL"),
    )

    name: str = Field(max_length=300, index=True)
    domain: str | None = Field(default=None, max_length=255)
    industry: str | None = Field(default=None, max_length=200)
    country: str | None = Field(default=None, max_length=2)
    phone: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=1000)
    owner_id: uuid.UUID | None = Field(default=None, index=True)
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


class AccountCreate(Input):
    """POST /v1/accounts."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ACCOUNT_CREATE))

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


class AccountUpdate(Patch):
    """PATCH /v1/accounts/{id}: only what is sent changes."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ACCOUNT_UPDATE))  # type: ignore[assignment]
    not_null = ("name", "attributes", "legal_notice")

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
    __table_args__ = (
        tenant_fk("contacts", "account_id", "accounts", ondelete="SET NULL"),
        tenant_fk("contacts", "owner_id", "users", ondelete="SET NULL"),
    )

    account_id: uuid.UUID | None = Field(default=None, index=True)
    name: str = Field(max_length=300)
    email: str | None = Field(default=None, max_length=320, index=True)
    phone: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)
    owner_id: uuid.UUID | None = Field(default=None, index=True)
    attributes: dict[str, Any] = JsonField()


class ContactCreate(Input):
    """POST /v1/contacts."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.CONTACT_CREATE))

    name: str = Field(min_length=1, max_length=300)
    account_id: uuid.UUID | None = None
    email: EmailAddress | None = None
    phone: str | None = Field(default=None, max_length=32)
    title: str | None = Field(default=None, max_length=200)
    owner_id: uuid.UUID | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class ContactUpdate(Patch):
    """PATCH /v1/contacts/{id}."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.CONTACT_UPDATE))  # type: ignore[assignment]
    not_null = ("name", "attributes")

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
