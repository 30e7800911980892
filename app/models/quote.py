"""Quotes (报价): numbered, revised, approved, sent, accepted; totals computed by the server."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Index, Numeric, String, UniqueConstraint
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
from app.models.common import CurrencyCode, Input, Patch
from app.money import plain_percent, round_money


class QuoteStatus(enum.StrEnum):
    """draft -> pending_approval -> approved -> sent -> accepted | declined | expired; any -> superseded."""

    draft = "draft"
    pending_approval = "pending_approval"
    approved = "approved"
    sent = "sent"
    accepted = "accepted"
    declined = "declined"
    expired = "expired"
    superseded = "superseded"


class DocumentCounter(IdMixin, TenantMixin, table=True):
    """The last number given per organisation, kind ("quote", "order") and year: gap-free numbering."""

    __tablename__ = "document_counters"
    __table_args__ = (UniqueConstraint("org_id", "kind", "year"),)

    kind: str = Field(max_length=16)
    year: int
    last_value: int = Field(default=0)


class Quote(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """One revision of a quote; a revision is immutable once it leaves draft (revise makes a new one)."""

    __tablename__ = "quotes"
    __table_args__ = (
        UniqueConstraint("org_id", "number", "revision"),
        Index("ix_quotes_status_valid_until", "status", "valid_until"),
        tenant_fk("quotes", "deal_id", "deals", ondelete="CASCADE"),
        tenant_fk("quotes", "created_by_id", "users", ondelete="SET NULL"),
        tenant_fk("quotes", "approved_by_id", "users", ondelete="SET NULL"),
        tenant_fk("quotes", "previous_revision_id", "quotes", ondelete="SET NULL"),
        tenant_fk("quotes", "superseded_by_id", "quotes", ondelete="SET NULL"),
    )

    deal_id: uuid.UUID = Field(index=True)
    number: str = Field(max_length=32)
    revision: int = Field(default=1)
    status: QuoteStatus = Field(default=QuoteStatus.draft, sa_type=String(20))
    currency: str = Field(max_length=3)
    issue_date: date
    valid_until: date | None = None
    tax_inclusive: bool = Field(default=False)
    discount_percent: Decimal = Field(default=Decimal("0"), sa_type=Numeric(7, 4))
    payment_terms: list[dict[str, Any]] = JsonField(default_factory=list)
    notes: str | None = Field(default=None, max_length=4000)
    # Computed lines (decimal strings), see app.services.pricing.
    lines: list[dict[str, Any]] = JsonField(default_factory=list)
    subtotal: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    discount_total: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    net_total: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    tax_total: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    total: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    is_primary: bool = Field(default=False)
    approval_reasons: list[str] = JsonField(default_factory=list)
    created_by_id: uuid.UUID | None = Field(default=None)
    approved_by_id: uuid.UUID | None = Field(default=None)
    approved_at: datetime | None = TimestampField(nullable=True, default_now=False)
    sent_at: datetime | None = TimestampField(nullable=True, default_now=False)
    accepted_at: datetime | None = TimestampField(nullable=True, default_now=False)
    declined_at: datetime | None = TimestampField(nullable=True, default_now=False)
    expired_at: datetime | None = TimestampField(nullable=True, default_now=False)
    status_reason: str | None = Field(default=None, max_length=2000)
    previous_revision_id: uuid.UUID | None = Field(default=None)
    superseded_by_id: uuid.UUID | None = Field(default=None)


class PaymentTerm(Input):
    """One installment of the payment plan: a percent of the total, due on acceptance or N days after."""

    percent: Decimal = PydanticField(gt=0, le=100, decimal_places=4)
    due: Literal["on_acceptance"] | None = None
    due_days: int | None = PydanticField(default=None, ge=0, le=3650)

    @model_validator(mode="after")
    def _one_due_rule(self) -> PaymentTerm:
        if (self.due is None) == (self.due_days is None):
            raise ValueError('give either "due": "on_acceptance" or "due_days"')
        return self


class PaymentTermRead(SQLModel):
    """One installment of a quote's payment plan, as the API answers it (its own schema, so the
    document has one schema per model: clients generated from it keep every quote model)."""

    percent: Decimal
    due: Literal["on_acceptance"] | None = None
    due_days: int | None = None


class QuoteLineIn(Input):
    """A line: a product (price, tax and name default from it) or free text; discount % or amount."""

    product_id: uuid.UUID | None = None
    description: str | None = PydanticField(default=None, max_length=2000)
    quantity: Decimal = PydanticField(gt=0, max_digits=14, decimal_places=4)
    unit_price: Decimal | None = PydanticField(default=None, ge=0, max_digits=18, decimal_places=4)
    discount_percent: Decimal | None = PydanticField(default=None, ge=0, le=100, decimal_places=4)
    discount_amount: Decimal | None = PydanticField(default=None, ge=0, max_digits=18, decimal_places=4)
    tax_rate: Decimal | None = PydanticField(default=None, ge=0, le=100, decimal_places=4)

    @model_validator(mode="after")
    def _shape(self) -> QuoteLineIn:
        if self.product_id is None and not (self.description and self.description.strip()):
            raise ValueError("a line needs a product_id or a description")
        if self.discount_percent is not None and self.discount_amount is not None:
            raise ValueError("give discount_percent or discount_amount, not both")
        return self


class QuoteLineRead(BaseModel):
    """A computed line: gross = quantity × unit price; net after both discounts; tax; total."""

    position: int
    product_id: uuid.UUID | None
    sku: str | None
    description: str
    quantity: Decimal
    unit_price: Decimal
    discount_percent: Decimal | None
    discount_amount: Decimal
    quote_discount_amount: Decimal
    tax_rate: Decimal
    gross: Decimal
    net: Decimal
    tax: Decimal
    total: Decimal


class QuoteCreate(Input):
    """POST /v1/quotes: currency defaults to the deal's; the first quote of a deal becomes primary."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.QUOTE_CREATE))

    deal_id: uuid.UUID
    currency: CurrencyCode | None = None
    issue_date: date | None = None
    valid_until: date | None = None
    tax_inclusive: bool = False
    discount_percent: Decimal = Field(default=Decimal("0"), ge=0, le=100, decimal_places=4)
    payment_terms: list[PaymentTerm] = Field(default_factory=list)
    notes: str | None = Field(default=None, max_length=4000)
    lines: list[QuoteLineIn] = Field(min_length=1, max_length=500)
    is_primary: bool | None = None


class QuoteUpdate(Patch):
    """PATCH /v1/quotes/{id} (draft only); `lines`, when sent, replace every line."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.QUOTE_UPDATE))  # type: ignore[assignment]
    not_null = ("currency", "issue_date", "tax_inclusive", "discount_percent")

    currency: CurrencyCode | None = None
    issue_date: date | None = None
    valid_until: date | None = None
    tax_inclusive: bool | None = None
    discount_percent: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=4)
    payment_terms: list[PaymentTerm] | None = None
    notes: str | None = Field(default=None, max_length=4000)
    lines: list[QuoteLineIn] | None = Field(default=None, min_length=1, max_length=500)


class QuoteRevise(QuoteUpdate):
    """POST /v1/quotes/{id}/revise: the new revision copies the old one, with these changes."""


class QuoteReason(Input):
    """A reason, for reject (back to draft) and decline."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.QUOTE_REASON))

    reason: str | None = Field(default=None, max_length=2000)


class QuoteAccept(Input):
    """POST /v1/quotes/{id}/accept (body optional): a manager's reason to accept over the
    account's credit limit."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.QUOTE_ACCEPT))

    credit_override_reason: str | None = Field(default=None, min_length=1, max_length=2000)


class QuoteRead(SQLModel):
    """A quote revision with its computed lines and totals (decimal strings in the currency)."""

    id: uuid.UUID
    org_id: uuid.UUID
    deal_id: uuid.UUID
    number: str
    revision: int
    status: QuoteStatus
    currency: str
    issue_date: date
    valid_until: date | None
    tax_inclusive: bool
    discount_percent: Decimal
    payment_terms: list[PaymentTermRead]
    notes: str | None
    lines: list[QuoteLineRead]
    subtotal: Decimal
    discount_total: Decimal
    net_total: Decimal
    tax_total: Decimal
    total: Decimal
    is_primary: bool
    approval_reasons: list[str]
    created_by_id: uuid.UUID | None
    approved_by_id: uuid.UUID | None
    approved_at: datetime | None
    sent_at: datetime | None
    accepted_at: datetime | None
    declined_at: datetime | None
    expired_at: datetime | None
    status_reason: str | None
    previous_revision_id: uuid.UUID | None
    superseded_by_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> QuoteRead:
        for name in ("subtotal", "discount_total", "net_total", "tax_total", "total"):
            setattr(self, name, round_money(getattr(self, name), self.currency))
        self.discount_percent = plain_percent(self.discount_percent)
        return self


class LineChange(BaseModel):
    """How one line position differs between two revisions."""

    position: int
    change: Literal["added", "removed", "changed"]
    fields: dict[str, list[Any]] = PydanticField(default_factory=dict)


class QuoteRevisionRead(BaseModel):
    """A revision in the list, with the line diff against the revision before it."""

    quote: QuoteRead
    line_changes: list[LineChange]
    total_change: list[Decimal] | None = None
