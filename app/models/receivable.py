"""Orders (合同/销售订单) from accepted quotes, and their payment plans (回款计划)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal

from pydantic import model_validator
from sqlalchemy import Index, Numeric, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, TenantMixin, TimestampField, TimestampsMixin, VersionMixin, tenant_fk
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
    """The order an accepted quote became: its total in the quote's currency, and installments."""

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
    deal_id: uuid.UUID = Field(index=True)
    quote_id: uuid.UUID = Field()
    account_id: uuid.UUID | None = Field(default=None, index=True)
    owner_id: uuid.UUID | None = Field(default=None, index=True)
    currency: str = Field(max_length=3)
    total: Decimal = Field(sa_type=Numeric(18, 4))
    status: OrderStatus = Field(default=OrderStatus.open, sa_type=String(16))
    ordered_at: datetime = TimestampField()


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


class InstallmentRead(SQLModel):
    """An installment as the API shows it."""

    id: uuid.UUID
    sequence: int
    percent: Decimal
    due_date: date
    amount: Decimal
    paid_amount: Decimal
    currency: str
    status: InstallmentStatus

    @model_validator(mode="after")
    def _money_digits(self) -> InstallmentRead:
        self.amount = round_money(self.amount, self.currency)
        self.paid_amount = round_money(self.paid_amount, self.currency)
        self.percent = plain_percent(self.percent)
        return self


class OrderRead(SQLModel):
    """An order with its payment plan."""

    id: uuid.UUID
    org_id: uuid.UUID
    number: str
    deal_id: uuid.UUID
    quote_id: uuid.UUID
    account_id: uuid.UUID | None
    owner_id: uuid.UUID | None
    currency: str
    total: Decimal
    status: OrderStatus
    ordered_at: datetime
    installments: list[InstallmentRead]
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> OrderRead:
        self.total = round_money(self.total, self.currency)
        return self
