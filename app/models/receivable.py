"""Orders (合同/销售订单) from accepted quotes, and their payment plans (回款计划)."""

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
from app.models.common import BusinessDate, CurrencyCode
from app.models.quote import QuoteLineIn
from app.money import plain_percent, round_money


class OrderStatus(enum.StrEnum):
    """An order is open until fully paid (payments come in a later issue) or cancelled."""

    open = "open"
    completed = "completed"
    cancelled = "cancelled"


class InstallmentStatus(enum.StrEnum):
    """Where one installment of the payment plan stands."""

    scheduled = "scheduled"
    partially_paid = "partially_paid"
    paid = "paid"
    overdue = "overdue"
    written_off = "written_off"


class Order(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """An order: made by accepting a quote, or entered directly for an account (no deal, no quote)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("org_id", "number"),
        UniqueConstraint("org_id", "quote_id"),
        tenant_fk("orders", "deal_id", "deals", ondelete="RESTRICT"),
        tenant_fk("orders", "quote_id", "quotes", ondelete="RESTRICT"),
        tenant_fk("orders", "account_id", "accounts", ondelete="SET NULL"),
        tenant_fk("orders", "owner_id", "users", ondelete="SET NULL"),
    )

    number: str = Field(max_length=32)
    # Both None for an order entered directly for an account.
    deal_id: uuid.UUID | None = Field(default=None, index=True)
    quote_id: uuid.UUID | None = Field(default=None)
    account_id: uuid.UUID | None = Field(default=None, index=True)
    owner_id: uuid.UUID | None = Field(default=None, index=True)
    currency: str = Field(max_length=3)
    total: Decimal = Field(sa_type=Numeric(18, 4))
    status: OrderStatus = Field(default=OrderStatus.open, sa_type=String(16))
    ordered_at: datetime = TimestampField()
    # Direct orders keep their computed lines (decimal strings, as on quotes).
    lines: list[dict[str, Any]] = JsonField(default_factory=list)
    created_by_id: uuid.UUID | None = None
    cancelled_on: date | None = None
    cancel_reason: str | None = Field(default=None, max_length=2000)
    # A manager accepted the quote over the account's credit limit (回款预警), and why.
    credit_override_by_id: uuid.UUID | None = None
    credit_override_reason: str | None = Field(default=None, max_length=2000)


class Installment(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """One payment due under an order; the amounts of an order's installments sum to its total."""

    __tablename__ = "installments"
    __table_args__ = (
        UniqueConstraint("org_id", "order_id", "sequence"),
        Index("ix_installments_org_id_status_due_date", "org_id", "status", "due_date"),
        tenant_fk("installments", "order_id", "orders", ondelete="CASCADE"),
    )

    order_id: uuid.UUID = Field(index=True)
    sequence: int
    percent: Decimal = Field(sa_type=Numeric(7, 4))
    due_date: date
    amount: Decimal = Field(sa_type=Numeric(18, 4))
    paid_amount: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    currency: str = Field(max_length=3)
    status: InstallmentStatus = Field(default=InstallmentStatus.scheduled, sa_type=String(16))
    # The part written off (order cancelled) and the local date it counts from.
    written_off_amount: Decimal = Field(default=Decimal("0"), sa_type=Numeric(18, 4))
    written_off_on: date | None = None
    # Promise to pay: dunning pauses from promise_made_on through promise_date.
    promise_date: date | None = None
    promise_amount: Decimal | None = Field(default=None, sa_type=Numeric(18, 4))
    promise_note: str | None = Field(default=None, max_length=2000)
    promise_made_on: date | None = None


class InstallmentRead(SQLModel):
    """An installment as the API shows it."""

    id: uuid.UUID
    sequence: int
    percent: Decimal
    due_date: date
    amount: Decimal
    paid_amount: Decimal
    written_off_amount: Decimal = Decimal(0)
    open_amount: Decimal = Decimal(0)
    written_off_on: date | None = None
    currency: str
    status: InstallmentStatus
    promise_date: date | None = None
    promise_amount: Decimal | None = None
    promise_note: str | None = None
    order_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _money_digits(self) -> InstallmentRead:
        self.amount = round_money(self.amount, self.currency)
        self.paid_amount = round_money(self.paid_amount, self.currency)
        self.written_off_amount = round_money(self.written_off_amount, self.currency)
        self.open_amount = round_money(
            self.amount - self.paid_amount - self.written_off_amount, self.currency
        )
        if self.promise_amount is not None:
            self.promise_amount = round_money(self.promise_amount, self.currency)
        self.percent = plain_percent(self.percent)
        return self


class OrderRead(SQLModel):
    """An order with its payment plan."""

    id: uuid.UUID
    org_id: uuid.UUID
    number: str
    deal_id: uuid.UUID | None
    quote_id: uuid.UUID | None
    account_id: uuid.UUID | None
    owner_id: uuid.UUID | None
    currency: str
    total: Decimal
    status: OrderStatus
    ordered_at: datetime
    lines: list[dict[str, Any]] = []
    cancelled_on: date | None = None
    cancel_reason: str | None = None
    credit_override_reason: str | None = None
    installments: list[InstallmentRead]
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> OrderRead:
        self.total = round_money(self.total, self.currency)
        return self


class OrderTerm(BaseModel):
    """One installment of a direct order: a percent of the total, due N days after the order
    date or on an explicit date."""

    model_config = ConfigDict(extra="forbid")

    percent: Decimal = PydanticField(gt=0, le=100, decimal_places=4)
    due_days: int | None = PydanticField(default=None, ge=0, le=3650)
    due_date: BusinessDate | None = None

    @model_validator(mode="after")
    def _one_due_rule(self) -> OrderTerm:
        if (self.due_days is None) == (self.due_date is None):
            raise ValueError('give either "due_days" or "due_date"')
        return self


class OrderCreate(BaseModel):
    """POST /v1/orders: an order entered directly for an account (a running contract may be
    entered with an `ordered_at` in the past)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.ORDER_CREATE))

    account_id: uuid.UUID
    currency: CurrencyCode
    lines: list[QuoteLineIn] = PydanticField(min_length=1, max_length=500)
    discount_percent: Decimal = PydanticField(default=Decimal(0), ge=0, le=100, decimal_places=4)
    tax_inclusive: bool = False
    payment_terms: list[OrderTerm] = PydanticField(min_length=1, max_length=60)
    ordered_at: BusinessDate | None = None
    owner_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None


class OrderCancel(BaseModel):
    """POST /v1/orders/{id}/cancel: the open installments are written off as of `effective_on`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.ORDER_CANCEL))

    reason: str | None = PydanticField(default=None, max_length=2000)
    effective_on: BusinessDate | None = None


class InstallmentReschedule(BaseModel):
    """POST /v1/installments/{id}/reschedule: a new due date, or a split into parts (amount and
    due date each) that sum to the installment's amount."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.INSTALLMENT_RESCHEDULE))

    due_date: BusinessDate | None = None
    parts: list[InstallmentPart] | None = PydanticField(default=None, min_length=2, max_length=24)
    reason: str | None = PydanticField(default=None, max_length=2000)

    @model_validator(mode="after")
    def _one_kind(self) -> InstallmentReschedule:
        if (self.due_date is None) == (self.parts is None):
            raise ValueError('give either "due_date" (reschedule) or "parts" (split)')
        return self


class InstallmentPart(BaseModel):
    """One part of a split installment."""

    model_config = ConfigDict(extra="forbid")

    amount: Decimal = PydanticField(gt=0, max_digits=18, decimal_places=4)
    due_date: BusinessDate


class PromiseCreate(BaseModel):
    """POST /v1/installments/{id}/promise: the customer promised to pay by `date` (dunning pauses)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.PROMISE_CREATE))

    date: BusinessDate
    amount: Decimal | None = PydanticField(default=None, gt=0, max_digits=18, decimal_places=4)
    note: str | None = PydanticField(default=None, max_length=2000)


InstallmentReschedule.model_rebuild()

AgingGroup = Literal["account", "owner", "team", "none"]


class AgingRow(BaseModel):
    """Open amounts of one group in one currency, per bucket."""

    group_id: str | None = None
    group_name: str | None = None
    currency: str
    buckets: dict[str, Decimal]
    total: Decimal


class AgingReport(BaseModel):
    """GET /v1/receivables/aging: per-group rows and a total row per currency."""

    as_of: date
    group_by: AgingGroup
    bucket_names: list[str]
    bucket_edges: list[int]
    rows: list[AgingRow]
    totals: list[AgingRow]
    definition_version: int
    filters: dict[str, Any]


class CollectionsRow(BaseModel):
    """Collections metrics of one group (or the total) in one currency."""

    group_id: str | None = None
    group_name: str | None = None
    currency: str
    due: Decimal
    collected: Decimal
    collection_rate: Decimal | None
    overdue: Decimal
    open_receivables: Decimal
    dso_days: Decimal | None


class CollectionsReport(BaseModel):
    """GET /v1/metrics/collections (DESIGN §7)."""

    definition_version: int
    filters: dict[str, Any]
    rows: list[CollectionsRow]
    totals: list[CollectionsRow]
