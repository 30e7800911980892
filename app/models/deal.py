"""Deals, their stage history and their field history (the metrics are SQL over both histories)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import model_validator
from sqlalchemy import Index, Numeric, String
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
from app.models.common import CurrencyCode, Input, Patch
from app.models.pipeline import StageRead
from app.money import round_money


class DealStatus(enum.StrEnum):
    """open while in an open stage; won / lost once closed (reopen brings it back to open)."""

    open = "open"
    won = "won"
    lost = "lost"


# Field changes that go to deal_field_history (the stage goes to deal_stage_history).
TRACKED_FIELDS = ("status", "amount", "currency", "probability", "expected_close_date", "owner_id")


class Deal(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A sales opportunity moving through a pipeline's stages."""

    __tablename__ = "deals"
    __table_args__ = (
        Index("ix_deals_org_id_pipeline_id_stage_id", "org_id", "pipeline_id", "stage_id"),
        Index("ix_deals_org_id_status_closed_at", "org_id", "status", "closed_at"),
        tenant_fk("deals", "pipeline_id", "pipelines", ondelete="RESTRICT"),
        tenant_fk("deals", "stage_id", "stages", ondelete="RESTRICT"),
        tenant_fk("deals", "account_id", "accounts", ondelete="SET NULL"),
        tenant_fk("deals", "contact_id", "contacts", ondelete="SET NULL"),
        tenant_fk("deals", "owner_id", "users", ondelete="SET NULL"),
    )

    pipeline_id: uuid.UUID = Field()
    stage_id: uuid.UUID = Field(index=True)
    name: str = Field(max_length=300)
    account_id: uuid.UUID | None = Field(default=None, index=True)
    contact_id: uuid.UUID | None = Field(default=None, index=True)
    # The lead this deal was converted from (the leads table lives in another domain).
    lead_id: uuid.UUID | None = Field(default=None, index=True)
    owner_id: uuid.UUID | None = Field(default=None, index=True)
    amount: Decimal | None = Field(default=None, sa_type=Numeric(18, 4))
    currency: str = Field(max_length=3)
    probability: Decimal = Field(default=Decimal("0"), sa_type=Numeric(5, 2))
    probability_overridden: bool = Field(default=False)
    expected_close_date: date | None = Field(default=None, index=True)
    status: DealStatus = Field(default=DealStatus.open, sa_type=String(8))
    lost_reason: str | None = Field(default=None, max_length=200)
    lost_note: str | None = Field(default=None, max_length=2000)
    stage_entered_at: datetime = TimestampField()
    last_activity_at: datetime = TimestampField()
    closed_at: datetime | None = TimestampField(nullable=True, default_now=False)
    attributes: dict[str, Any] = JsonField()


class DealStageHistory(IdMixin, TenantMixin, table=True):
    """One row per stage change, append-only; creation is entering the first stage (from = null)."""

    __tablename__ = "deal_stage_history"
    __table_args__ = (
        Index("ix_deal_stage_history_org_id_deal_id_at", "org_id", "deal_id", "at"),
        Index("ix_deal_stage_history_org_id_to_stage_id_at", "org_id", "to_stage_id", "at"),
        Index("ix_deal_stage_history_org_id_at", "org_id", "at"),
        tenant_fk("deal_stage_history", "deal_id", "deals", ondelete="CASCADE"),
        tenant_fk("deal_stage_history", "pipeline_id", "pipelines", ondelete="CASCADE"),
        tenant_fk("deal_stage_history", "from_stage_id", "stages", ondelete="RESTRICT"),
        tenant_fk("deal_stage_history", "to_stage_id", "stages", ondelete="RESTRICT"),
        tenant_fk("deal_stage_history", "by_user_id", "users", ondelete="SET NULL"),
    )

    deal_id: uuid.UUID = Field()
    pipeline_id: uuid.UUID = Field()
    from_stage_id: uuid.UUID | None = Field(default=None)
    to_stage_id: uuid.UUID = Field()
    at: datetime = TimestampField()
    by_user_id: uuid.UUID | None = Field(default=None)


class DealFieldHistory(IdMixin, TenantMixin, table=True):
    """One row per change of a tracked field, with the previous and new values (JSON), append-only."""

    __tablename__ = "deal_field_history"
    __table_args__ = (
        Index("ix_deal_field_history_org_id_deal_id_at", "org_id", "deal_id", "at"),
        Index("ix_deal_field_history_org_id_field_at", "org_id", "field", "at"),
        tenant_fk("deal_field_history", "deal_id", "deals", ondelete="CASCADE"),
        tenant_fk("deal_field_history", "by_user_id", "users", ondelete="SET NULL"),
    )

    deal_id: uuid.UUID = Field()
    field: str = Field(max_length=64)
    old_value: Any = JsonField(default_factory=lambda: None, nullable=True)
    new_value: Any = JsonField(default_factory=lambda: None, nullable=True)
    at: datetime = TimestampField()
    by_user_id: uuid.UUID | None = Field(default=None)


class DealCreate(Input):
    """POST /v1/deals: pipeline defaults to the organisation's default, stage to its first."""

    name: str = Field(min_length=1, max_length=300)
    pipeline_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    lead_id: uuid.UUID | None = None
    owner_id: uuid.UUID | None = None
    amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = None
    probability: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=2)
    expected_close_date: date | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class DealUpdate(Patch):
    """PATCH /v1/deals/{id}; the stage changes only through /move, /won, /lost, /reopen."""

    not_null = ("name", "currency", "attributes", "owner_id")

    name: str | None = Field(default=None, min_length=1, max_length=300)
    account_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    owner_id: uuid.UUID | None = None
    amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = None
    probability: Decimal | None = Field(
        default=None, ge=0, le=100, decimal_places=2, description="null goes back to the stage default"
    )
    expected_close_date: date | None = None
    attributes: dict[str, Any] | None = None


class DealMove(Input):
    """POST /v1/deals/{id}/move."""

    stage_id: uuid.UUID
    lost_reason: str | None = Field(default=None, max_length=200, description="needed for a lost stage")


class DealLost(Input):
    """POST /v1/deals/{id}/lost: a reason from the organisation's list."""

    reason: str = Field(min_length=1, max_length=200)
    note: str | None = Field(default=None, max_length=2000)


class DealReopen(Input):
    """POST /v1/deals/{id}/reopen: back to an open stage (default: the last open one it was in)."""

    stage_id: uuid.UUID | None = None


class DealRead(SQLModel):
    """A deal as the API shows it; amount has the currency's minor-unit digits."""

    id: uuid.UUID
    org_id: uuid.UUID
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    name: str
    account_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    lead_id: uuid.UUID | None
    owner_id: uuid.UUID | None
    amount: Decimal | None
    currency: str
    probability: Decimal
    probability_overridden: bool
    expected_close_date: date | None
    status: DealStatus
    lost_reason: str | None
    lost_note: str | None
    stage_entered_at: datetime
    last_activity_at: datetime
    closed_at: datetime | None
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> DealRead:
        if self.amount is not None:
            self.amount = round_money(self.amount, self.currency)
        return self


class CurrencyTotal(SQLModel):
    """Deals of one currency: amounts in different currencies are never added together."""

    currency: str
    count: int
    amount: Decimal
    weighted_amount: Decimal


class DealPage(SQLModel):
    """A page of deals, with totals per currency over every deal matching the filters."""

    data: list[DealRead]
    next_cursor: str | None = None
    totals: list[CurrencyTotal]


class BoardColumn(SQLModel):
    """One stage on the board: its open deals' count and totals per currency, and the first deals."""

    stage: StageRead
    count: int
    totals: list[CurrencyTotal]
    deals: list[DealRead]
    next_cursor: str | None = None


class Board(SQLModel):
    """GET /v1/pipelines/{id}/board."""

    pipeline_id: uuid.UUID
    columns: list[BoardColumn]


class HistoryKind(enum.StrEnum):
    """A history entry is a stage change or a field change."""

    stage = "stage"
    field = "field"


class DealHistoryEntry(SQLModel):
    """One change: a stage move (from/to) or a tracked field (old/new value), by whom and when."""

    kind: HistoryKind
    at: datetime
    by_user_id: uuid.UUID | None
    from_stage_id: uuid.UUID | None = None
    to_stage_id: uuid.UUID | None = None
    field: str | None = None
    old_value: Any = None
    new_value: Any = None
