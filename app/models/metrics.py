"""Metrics storage: sales targets, dated exchange rates, daily pipeline snapshots, import keys.

These tables are born with the tenant keys of DESIGN.md §10: primary key (org_id, id), unique
constraints that include org_id, and composite foreign keys (org_id, x_id) -> (org_id, id).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import ConfigDict, model_validator
from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    Column,
    Computed,
    Double,
    ForeignKeyConstraint,
    Index,
    Numeric,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlmodel import Field, SQLModel

from app.db import TenantScoped
from app.models import examples as ex
from app.models.base import IdMixin, TenantMixin, TimestampField, new_id, tenant_fk
from app.models.common import CurrencyCode, Input, Patch
from app.money import round_money

# The seconds percentile_cont sorts: EXTRACT(EPOCH ...) (numeric) cast to float8, as the cycle metric
# computes them on the fly.
STAY_SECONDS = "(EXTRACT(EPOCH FROM left_at - entered_at))::double precision"
CYCLE_SECONDS = "(EXTRACT(EPOCH FROM closed_at - created_at))::double precision"


class TenantKeyMixin(TenantScoped, SQLModel):
    """Primary key (org_id, id); the id stays a globally unique UUID."""

    org_id: uuid.UUID = Field(
        default=None, primary_key=True, foreign_key="organisations.id", ondelete="CASCADE"
    )
    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)


class TargetPeriod(enum.StrEnum):
    """A target covers one calendar month, quarter or year (local dates)."""

    month = "month"
    quarter = "quarter"
    year = "year"


class SalesTarget(TenantKeyMixin, table=True):
    """销售目标: an amount (and optionally a count of won deals) per user, team or the organisation."""

    __tablename__ = "sales_targets"
    __table_args__ = (
        ForeignKeyConstraint(
            ["org_id", "user_id"],
            ["users.org_id", "users.id"],
            ondelete="CASCADE",
            name="fk_sales_targets_user",
        ),
        ForeignKeyConstraint(
            ["org_id", "team_id"],
            ["teams.org_id", "teams.id"],
            ondelete="CASCADE",
            name="fk_sales_targets_team",
        ),
        CheckConstraint("user_id IS NULL OR team_id IS NULL", name="one_scope"),
        Index("ix_sales_targets_org_id_period_start", "org_id", "period_start"),
    )

    user_id: uuid.UUID | None = Field(default=None)
    team_id: uuid.UUID | None = Field(default=None)
    period: TargetPeriod = Field(sa_type=String(8))
    period_start: dt.date
    period_end: dt.date
    amount: Decimal = Field(sa_type=Numeric(18, 4))
    currency: str = Field(max_length=3)
    count: int | None = Field(default=None)
    created_at: datetime = TimestampField()
    updated_at: datetime = TimestampField()
    version: int = Field(default=1)


class SalesTargetCreate(Input):
    """POST /v1/targets: one of user_id / team_id (neither: the whole organisation)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.SALES_TARGET_CREATE))

    user_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    period: TargetPeriod
    period_start: dt.date = Field(description="The first day of the month, quarter or year")
    amount: Decimal = Field(ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = Field(
        default=None, description="Default: the organisation's base currency"
    )
    count: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_scope(self) -> SalesTargetCreate:
        if self.user_id is not None and self.team_id is not None:
            raise ValueError("a target is for a user or a team, not both")
        return self


class SalesTargetUpdate(Patch):
    """PATCH /v1/targets/{id}: amount, currency, count."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.SALES_TARGET_UPDATE))  # type: ignore[assignment]

    not_null = ("amount", "currency")

    amount: Decimal | None = Field(default=None, ge=0, max_digits=18, decimal_places=4)
    currency: CurrencyCode | None = None
    count: int | None = Field(default=None, ge=0)


class SalesTargetRead(SQLModel):
    """A target as the API shows it (period_end is exclusive)."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    team_id: uuid.UUID | None
    period: TargetPeriod
    period_start: dt.date
    period_end: dt.date
    amount: Decimal
    currency: str
    count: int | None
    created_at: datetime
    updated_at: datetime
    version: int

    @model_validator(mode="after")
    def _money_digits(self) -> SalesTargetRead:
        self.amount = round_money(self.amount, self.currency)
        return self


class ExchangeRate(TenantKeyMixin, table=True):
    """1 `from_currency` = `rate` `to_currency`, valid from `date` until the next dated rate."""

    __tablename__ = "exchange_rates"
    __table_args__ = (
        UniqueConstraint("org_id", "from_currency", "to_currency", "date"),
        CheckConstraint("rate > 0", name="positive_rate"),
    )

    date: dt.date
    from_currency: str = Field(max_length=3)
    to_currency: str = Field(max_length=3)
    rate: Decimal = Field(sa_type=Numeric(24, 10))
    created_at: datetime = TimestampField()


class ExchangeRateCreate(Input):
    """POST /v1/exchange-rates: a rate for a date (posting the same date and pair again replaces it)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.EXCHANGE_RATE_CREATE))

    date: dt.date
    from_currency: CurrencyCode = Field(alias="from")
    to_currency: CurrencyCode = Field(alias="to")
    rate: Decimal = Field(gt=0, max_digits=24, decimal_places=10)

    @model_validator(mode="after")
    def _two_currencies(self) -> ExchangeRateCreate:
        if self.from_currency == self.to_currency:
            raise ValueError("from and to must differ")
        return self


class ExchangeRateRead(SQLModel):
    """A dated rate."""

    model_config = ConfigDict(populate_by_name=True)  # type: ignore[assignment]

    id: uuid.UUID
    date: dt.date
    from_currency: str = Field(serialization_alias="from")
    to_currency: str = Field(serialization_alias="to")
    rate: Decimal


class PipelineSnapshot(TenantKeyMixin, table=True):
    """Open pipeline at the end of one local day: per stage, owner (on that day) and currency."""

    __tablename__ = "pipeline_snapshots"
    __table_args__ = (
        ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            ondelete="CASCADE",
            name="fk_pipeline_snapshots_pipeline",
        ),
        ForeignKeyConstraint(
            ["org_id", "stage_id"],
            ["stages.org_id", "stages.id"],
            ondelete="CASCADE",
            name="fk_pipeline_snapshots_stage",
        ),
        Index("ix_pipeline_snapshots_org_id_day", "org_id", "day"),
    )

    day: dt.date
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    # The owner on that day; a plain id (no key) so deleting a user keeps the past as it was.
    owner_id: uuid.UUID | None = Field(default=None)
    currency: str = Field(max_length=3)
    count: int
    amount: Decimal = Field(sa_type=Numeric(24, 4))
    weighted_amount: Decimal = Field(sa_type=Numeric(30, 8))


class PipelineSnapshotDay(TenantKeyMixin, table=True):
    """A local day whose snapshot rows are complete (a day without open deals has no rows)."""

    __tablename__ = "pipeline_snapshot_days"
    __table_args__ = (UniqueConstraint("org_id", "day"),)

    day: dt.date
    taken_at: datetime = TimestampField()


class ImportKind(enum.StrEnum):
    """What a history import line makes."""

    deal = "deal"
    lead = "lead"


class ImportRecord(TenantKeyMixin, table=True):
    """The row an import line made, keyed by the line's external_id (re-imports update it)."""

    __tablename__ = "import_records"
    __table_args__ = (
        UniqueConstraint("org_id", "kind", "external_id"),
        ForeignKeyConstraint(
            ["org_id", "deal_id"],
            ["deals.org_id", "deals.id"],
            ondelete="CASCADE",
            name="fk_import_records_deal",
        ),
        ForeignKeyConstraint(
            ["org_id", "lead_id"],
            ["leads.org_id", "leads.id"],
            ondelete="CASCADE",
            name="fk_import_records_lead",
        ),
    )

    kind: ImportKind = Field(sa_type=String(8))
    external_id: str = Field(max_length=200)
    deal_id: uuid.UUID | None = Field(default=None)
    lead_id: uuid.UUID | None = Field(default=None)
    # SHA-256 of the line as imported: the same line again changes nothing.
    checksum: str = Field(max_length=64)
    created_at: datetime = TimestampField()
    updated_at: datetime = TimestampField()


class DealOpenRollup(TenantKeyMixin, table=True):
    """Open deals now, summed per pipeline, stage, currency, owner, source and expected close month.

    Kept by a trigger on deals (every insert, change and delete adds or takes away the deal's share),
    so it always equals the same sums over the deals table; tests rebuild it and compare.
    """

    __tablename__ = "deal_open_rollup"
    __table_args__ = (
        UniqueConstraint(
            "org_id",
            "pipeline_id",
            "stage_id",
            "currency",
            "owner_id",
            "source",
            "close_month",
            name="uq_deal_open_rollup_key",
            postgresql_nulls_not_distinct=True,
        ),
        ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            ondelete="CASCADE",
            name="fk_deal_open_rollup_pipeline",
        ),
    )

    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    currency: str = Field(max_length=3)
    owner_id: uuid.UUID | None = Field(default=None)
    source: str | None = Field(default=None, max_length=16)
    close_month: str | None = Field(default=None, max_length=7)
    n: int
    amount: Decimal = Field(sa_type=Numeric())
    weighted: Decimal = Field(sa_type=Numeric())


class DealClosedRollup(TenantKeyMixin, table=True):
    """Won and lost deals summed per local close day (the organisation's timezone), status, pipeline,
    currency, owner and source: count, Σ amount, amounts counted, Σ cycle seconds. Trigger-kept."""

    __tablename__ = "deal_closed_rollup"
    __table_args__ = (
        UniqueConstraint(
            "org_id",
            "day",
            "status",
            "pipeline_id",
            "currency",
            "owner_id",
            "source",
            name="uq_deal_closed_rollup_key",
            postgresql_nulls_not_distinct=True,
        ),
        ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            ondelete="CASCADE",
            name="fk_deal_closed_rollup_pipeline",
        ),
        Index("ix_deal_closed_rollup_org_id_day", "org_id", "day"),
    )

    day: dt.date
    status: str = Field(max_length=8)
    pipeline_id: uuid.UUID
    currency: str = Field(max_length=3)
    owner_id: uuid.UUID | None = Field(default=None)
    source: str | None = Field(default=None, max_length=16)
    n: int
    amount: Decimal = Field(sa_type=Numeric())
    amount_n: int
    cycle_seconds: Decimal = Field(sa_type=Numeric())


class DealStageStay(IdMixin, TenantMixin, table=True):
    """A stay in a stage that has ended: one row per stage-history entry that a later entry of the
    same deal follows (`id` is the entry's id), from its `at` to the next entry's (`at`, then id,
    order). Kept by statement triggers on deal_stage_history (each statement recomputes the stays
    of the deals it touched), so it always equals `lead(at)` over the history; time in stage reads
    it by `left_at` instead of ordering the whole history."""

    __tablename__ = "deal_stage_stays"
    __table_args__ = (
        Index(
            "ix_deal_stage_stays_org_id_left_at",
            "org_id",
            "left_at",
            postgresql_include=["stage_id", "entered_at", "deal_id"],
        ),
        Index("ix_deal_stage_stays_org_id_deal_id", "org_id", "deal_id"),
        Index(
            "ix_deal_stage_stays_org_id_stage_id_bucket_seconds",
            "org_id",
            "stage_id",
            "bucket",
            "seconds",
            postgresql_include=["left_at"],
        ),
        tenant_fk("deal_stage_stays", "deal_id", "deals", ondelete="CASCADE"),
    )

    deal_id: uuid.UUID = Field()
    stage_id: uuid.UUID = Field()
    entered_at: datetime = TimestampField()
    left_at: datetime = TimestampField()
    # What percentile_cont sorts (the stay's seconds as float8) and its duration class
    # (loudou_duration_bucket, monotonic in seconds): time in stage walks them in this order.
    seconds: float = Field(sa_column=Column(Double(), Computed(STAY_SECONDS, persisted=True), nullable=False))
    bucket: int = Field(
        sa_column=Column(
            SmallInteger(),
            Computed(f"loudou_duration_bucket({STAY_SECONDS})", persisted=True),
            nullable=False,
        )
    )


class DealFunnelFacts(IdMixin, TenantMixin, table=True):
    """What the cohort funnel needs of one deal (`id` is the deal's id), in one narrow row: the deal's
    own columns the funnel filters, groups and sums by, the stages its history ever entered
    (`reached`, sorted ids) and, for a lost deal, the stage it left for the lost stage (`last_open`).
    Kept by triggers on deals and deal_stage_history (each change recomputes the deals it touched),
    so it always equals the same computation over the base tables; the funnel reads it by
    (org_id, pipeline_id, created_at) instead of joining the cohort to its stage history."""

    __tablename__ = "deal_funnel_facts"
    __table_args__ = (
        Index(
            "ix_deal_funnel_facts_org_id_pipeline_id_created_at",
            "org_id",
            "pipeline_id",
            "created_at",
            postgresql_include=[
                "status",
                "currency",
                "amount",
                "owner_id",
                "lead_id",
                "closed_at",
                "reached",
                "last_open",
            ],
        ),
        Index(
            "ix_deal_funnel_facts_won_cycle",
            "org_id",
            "cycle_bucket",
            "cycle_seconds",
            postgresql_include=["closed_at"],
            postgresql_where=text("status = 'won'"),
        ),
        tenant_fk("deal_funnel_facts", "id", "deals", ondelete="CASCADE"),
    )

    pipeline_id: uuid.UUID = Field()
    lead_id: uuid.UUID | None = Field(default=None)
    owner_id: uuid.UUID | None = Field(default=None)
    currency: str = Field(max_length=3)
    amount: Decimal | None = Field(default=None, sa_type=Numeric(18, 4))
    status: str = Field(max_length=8)
    created_at: datetime = TimestampField()
    closed_at: datetime | None = TimestampField(nullable=True, default_now=False)
    reached: list[uuid.UUID] = Field(sa_type=ARRAY(Uuid()))
    last_open: uuid.UUID | None = Field(default=None)
    # The sales cycle percentile_cont sorts (closed_at - created_at in seconds, float8), and its
    # duration bucket: the cycle's median and p75 walk the won deals in this order.
    cycle_seconds: float | None = Field(
        default=None, sa_column=Column(Double(), Computed(CYCLE_SECONDS, persisted=True), nullable=True)
    )
    cycle_bucket: int | None = Field(
        default=None,
        sa_column=Column(
            SmallInteger(),
            Computed(f"loudou_duration_bucket({CYCLE_SECONDS})", persisted=True),
            nullable=True,
        ),
    )


class LeadFunnelFacts(IdMixin, TenantMixin, table=True):
    """What the lead funnel needs of one lead (`id` is the lead's id), in one narrow row: the lead's
    columns it filters, groups and counts by, and whether the deal it converted to is won now.
    Kept by triggers on leads (insert; update of those columns) and deals (status, insert, delete),
    so it always equals the same computation over the base tables; the lead funnel reads it by
    (org_id, created_at) instead of the leads joined to their deals."""

    __tablename__ = "lead_funnel_facts"
    __table_args__ = (
        Index(
            "ix_lead_funnel_facts_org_id_created_at",
            "org_id",
            "created_at",
            postgresql_include=[
                "owner_id",
                "source",
                "source_id",
                "status",
                "first_contacted_at",
                "converted_deal_id",
                "duplicate_of",
                "deleted_at",
                "won",
            ],
        ),
        Index("ix_lead_funnel_facts_org_id_converted_deal_id", "org_id", "converted_deal_id"),
        tenant_fk("lead_funnel_facts", "id", "leads", ondelete="CASCADE"),
    )

    created_at: datetime = TimestampField()
    owner_id: uuid.UUID | None = Field(default=None)
    source: str = Field(max_length=16)
    source_id: uuid.UUID | None = Field(default=None)
    status: str = Field(max_length=16)
    first_contacted_at: datetime | None = TimestampField(nullable=True, default_now=False)
    converted_deal_id: uuid.UUID | None = Field(default=None)
    duplicate_of: uuid.UUID | None = Field(default=None)
    deleted_at: datetime | None = TimestampField(nullable=True, default_now=False)
    won: bool = False


class DealFunnelDay(IdMixin, TenantMixin, table=True):
    """deal_funnel_facts summed per pipeline, local creation day (the organisation's timezone),
    status, currency, stages reached and last open stage: count and Σ amount. Kept by a trigger on
    deal_funnel_facts (each fact row in or out adds or takes away its share; a timezone change
    rebuilds it with the deal rollups); the funnel reads it when no filter needs a deal's owner,
    lead or conversion day."""

    __tablename__ = "deal_funnel_days"
    __table_args__ = (
        UniqueConstraint(
            "org_id",
            "pipeline_id",
            "day",
            "status",
            "currency",
            "reached",
            "last_open",
            name="uq_deal_funnel_days_key",
            postgresql_nulls_not_distinct=True,
        ),
        tenant_fk("deal_funnel_days", "pipeline_id", "pipelines", ondelete="CASCADE"),
    )

    pipeline_id: uuid.UUID = Field()
    day: dt.date
    status: str = Field(max_length=8)
    currency: str = Field(max_length=3)
    reached: list[uuid.UUID] = Field(sa_type=ARRAY(Uuid()))
    last_open: uuid.UUID | None = Field(default=None)
    n: int
    amount: Decimal = Field(sa_type=Numeric())


class _DurationCounts(IdMixin, TenantMixin):
    """What both duration rollups hold: a stage (NULL: the won deals' cycle, created -> won), a
    duration bucket (loudou_duration_bucket), a count and the exact Σ seconds."""

    stage_id: uuid.UUID | None = Field(default=None)
    bucket: int = Field(sa_type=SmallInteger())
    n: int
    seconds: Decimal = Field(sa_type=Numeric())


class DealDurationDay(_DurationCounts, table=True):
    """Ended stays (by stage, local day of `left_at`) and won deals' cycles (stage NULL, local day of
    `closed_at`) counted per duration bucket, in the organisation's timezone. Kept by the stays and
    facts triggers (a timezone change rebuilds it); the cycle metric reads its counts and means and
    walks only the bucket that holds a percentile's rank."""

    __tablename__ = "deal_duration_days"
    __table_args__ = (
        UniqueConstraint(
            "org_id",
            "day",
            "stage_id",
            "bucket",
            name="uq_deal_duration_days_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    day: dt.date


class DealDurationMonth(_DurationCounts, table=True):
    """deal_duration_days summed per local month (first day), kept by statement triggers on it: a
    year is read as twelve months and its edge days."""

    __tablename__ = "deal_duration_months"
    __table_args__ = (
        UniqueConstraint(
            "org_id",
            "month",
            "stage_id",
            "bucket",
            name="uq_deal_duration_months_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    month: dt.date
