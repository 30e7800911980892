"""Payments (回款) and their allocations (核销) to installments; unallocated money is account credit."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Index, Numeric, PrimaryKeyConstraint, String
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
from app.money import plain_percent, round_money


class PaymentMethod(enum.StrEnum):
    """How the money came (预存款 prepayment and 返利 rebate are drawn from the customer's account)."""

    bank_transfer = "bank_transfer"
    card = "card"
    cash = "cash"
    cheque = "cheque"
    prepayment = "prepayment"
    rebate = "rebate"


class PaymentStatus(enum.StrEnum):
    """pending_confirmation -> confirmed | rejected; confirmed -> reversed. Only confirmed counts."""

    pending_confirmation = "pending_confirmation"
    confirmed = "confirmed"
    rejected = "rejected"
    reversed = "reversed"


class Payment(TenantMixin, IdMixin, TimestampsMixin, VersionMixin, table=True):
    """Money received from an account, in its own currency, dated by the day it was received."""

    __tablename__ = "payments"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        tenant_fk("payments", "account_id", "accounts", ondelete="RESTRICT"),
        Index("ix_payments_org_id_account_id_received_at", "org_id", "account_id", "received_at"),
    )

    account_id: uuid.UUID
    amount: Decimal = Field(sa_type=Numeric(18, 4))
    currency: str = Field(max_length=3)
    received_at: date
    method: PaymentMethod = Field(sa_type=String(16))
    reference: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=2000)
    status: PaymentStatus = Field(default=PaymentStatus.pending_confirmation, sa_type=String(24))
    # The allocations the request named (applied on confirmation), and the default exchange rate.
    requested_allocations: list[dict[str, Any]] | None = JsonField(
        default_factory=lambda: None, nullable=True
    )
    exchange_rate: Decimal | None = Field(default=None, sa_type=Numeric(20, 10))
    created_by_id: uuid.UUID | None = None
    confirmed_by_id: uuid.UUID | None = None
    confirmed_at: datetime | None = TimestampField(nullable=True, default_now=False)
    rejected_by_id: uuid.UUID | None = None
    rejected_at: datetime | None = TimestampField(nullable=True, default_now=False)
    reject_reason: str | None = Field(default=None, max_length=2000)
    reversed_by_id: uuid.UUID | None = None
    reversed_at: datetime | None = TimestampField(nullable=True, default_now=False)
    reversed_on: date | None = None
    reversal_reason: str | None = Field(default=None, max_length=2000)


class PaymentAllocation(TenantMixin, IdMixin, table=True):
    """Part of a payment applied to one installment (回款明细): `amount` in the payment's currency,
    `applied_amount` in the installment's (amount × exchange_rate, rounded half-up)."""

    __tablename__ = "payment_allocations"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        tenant_fk("payment_allocations", "payment_id", "payments", ondelete="CASCADE"),
        tenant_fk("payment_allocations", "installment_id", "installments", ondelete="RESTRICT"),
        Index("ix_payment_allocations_org_id_payment_id", "org_id", "payment_id"),
        Index("ix_payment_allocations_org_id_installment_id", "org_id", "installment_id"),
    )

    payment_id: uuid.UUID
    installment_id: uuid.UUID
    amount: Decimal = Field(sa_type=Numeric(18, 4))
    applied_amount: Decimal = Field(sa_type=Numeric(18, 4))
    applied_currency: str = Field(max_length=3)
    exchange_rate: Decimal | None = Field(default=None, sa_type=Numeric(20, 10))
    # "payment" when made with the payment, "credit" when applied later from the account's credit.
    source: str = Field(default="payment", max_length=16)
    created_at: datetime = TimestampField()
    created_by_id: uuid.UUID | None = None


class AllocationIn(BaseModel):
    """One allocation named by the request."""

    model_config = ConfigDict(extra="forbid")

    installment_id: uuid.UUID
    amount: Decimal = PydanticField(gt=0, max_digits=18, decimal_places=4)
    exchange_rate: Decimal | None = PydanticField(default=None, gt=0, max_digits=20, decimal_places=10)


class PaymentCreate(BaseModel):
    """POST /v1/payments."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.PAYMENT_CREATE))

    account_id: uuid.UUID
    amount: Decimal = PydanticField(gt=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode
    received_at: BusinessDate
    method: PaymentMethod = PaymentMethod.bank_transfer
    reference: str | None = PydanticField(default=None, max_length=200)
    note: str | None = PydanticField(default=None, max_length=2000)
    exchange_rate: Decimal | None = PydanticField(
        default=None,
        gt=0,
        max_digits=20,
        decimal_places=10,
        description="Units of the installments' currency per one unit of the payment's "
        "(other currencies only).",
    )
    allocations: list[AllocationIn] | None = PydanticField(default=None, max_length=200)


class PaymentReason(BaseModel):
    """A reason (rejection)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.PAYMENT_REASON))

    reason: str | None = PydanticField(default=None, max_length=2000)


class PaymentReverse(BaseModel):
    """POST /v1/payments/{id}/reverse."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.PAYMENT_REVERSE))

    reason: str = PydanticField(min_length=1, max_length=2000)
    reversed_on: BusinessDate | None = None


class CreditApply(BaseModel):
    """POST /v1/accounts/{id}/credit/apply: the account's credit to named installments, or to its
    open installments oldest due first."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.CREDIT_APPLY))

    currency: CurrencyCode | None = None
    allocations: list[AllocationIn] | None = PydanticField(default=None, max_length=200)


class AllocationRead(SQLModel):
    """An allocation as the API shows it."""

    id: uuid.UUID
    payment_id: uuid.UUID
    installment_id: uuid.UUID
    amount: Decimal
    applied_amount: Decimal
    applied_currency: str
    exchange_rate: Decimal | None
    source: str
    created_at: datetime

    @model_validator(mode="after")
    def _digits(self) -> AllocationRead:
        self.applied_amount = round_money(self.applied_amount, self.applied_currency)
        if self.exchange_rate is not None:
            self.exchange_rate = plain_percent(self.exchange_rate)
        return self


class PaymentRead(SQLModel):
    """A payment with its allocations and what is left of it as credit."""

    id: uuid.UUID
    org_id: uuid.UUID
    account_id: uuid.UUID
    amount: Decimal
    currency: str
    received_at: date
    method: PaymentMethod
    reference: str | None
    note: str | None
    status: PaymentStatus
    exchange_rate: Decimal | None
    requested_allocations: list[dict[str, Any]] | None
    allocations: list[AllocationRead]
    unallocated: Decimal
    created_by_id: uuid.UUID | None
    confirmed_by_id: uuid.UUID | None
    confirmed_at: datetime | None
    rejected_by_id: uuid.UUID | None
    rejected_at: datetime | None
    reject_reason: str | None
    reversed_by_id: uuid.UUID | None
    reversed_at: datetime | None
    reversed_on: date | None
    reversal_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> PaymentRead:
        self.amount = round_money(self.amount, self.currency)
        self.unallocated = round_money(self.unallocated, self.currency)
        for a in self.allocations:
            a.amount = round_money(a.amount, self.currency)
        return self


class CreditBalance(BaseModel):
    """Unallocated money of confirmed payments, per currency."""

    currency: str
    amount: Decimal


class CreditApplied(BaseModel):
    """What POST /v1/accounts/{id}/credit/apply did."""

    account_id: uuid.UUID
    allocations: list[AllocationRead]
    credit: list[CreditBalance]


class CreditFactor(BaseModel):
    """One factor of the credit rating: its value, score (0-100), weight and weighted score."""

    name: str
    value: Any
    score: Decimal
    weight: int
    weighted_score: Decimal
    explanation: str


class Exposure(BaseModel):
    """Open installments of open orders plus sent/approved quotes, in the credit currency."""

    currency: str
    open_installments: Decimal
    open_quotes: Decimal
    total: Decimal
    not_counted: dict[str, Decimal]


class CreditReport(BaseModel):
    """GET /v1/accounts/{id}/credit: limit, exposure, the rating with every factor and weight."""

    account_id: uuid.UUID
    credit_limit: Decimal | None
    currency: str
    exposure: Exposure
    available: Decimal | None
    over_limit: bool
    rating: str
    score: Decimal
    previous_rating: str | None
    stored_rating: str | None
    factors: list[CreditFactor]
    weights: dict[str, int]
    grades: dict[str, int]
    legal_notice: bool
    as_of: date
    credit_balance: list[CreditBalance]
