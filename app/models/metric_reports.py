"""The metrics endpoints' response bodies: one envelope, a row type per metric (DESIGN.md §7)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

R = TypeVar("R", bound=BaseModel)


class RateUsed(BaseModel):
    """A dated exchange rate the converted amounts used: 1 from = rate to, valid from `date`."""

    from_currency: str
    to_currency: str
    date: dt.date
    rate: Decimal


class PeriodRead(BaseModel):
    """The period a response covers: local dates [from, to) in the organisation's timezone."""

    from_: dt.date = Field(serialization_alias="from")
    to: dt.date
    timezone: str


class MetricReport(BaseModel, Generic[R]):
    """Every metrics response: its definition version, the filters it applied, and its rows."""

    metric: str
    definition_version: int
    filters: dict[str, Any]
    period: PeriodRead | None = None
    as_of: dt.date | None = None
    rates_used: list[RateUsed] = Field(default_factory=list)
    rows: list[R]


# --- funnel -----------------------------------------------------------------------------------


class FunnelAmount(BaseModel):
    """A stage's amounts in one currency (Σ current amount of the deals counted)."""

    currency: str
    reached_amount: Decimal
    lost_here_amount: Decimal | None
    amount_conversion_from_previous: float | None
    amount_conversion_from_first: float | None
    amount_drop_off: float | None


class FunnelRow(BaseModel):
    """One stage of the cohort funnel (the won stage last)."""

    group: str | None = None
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    stage_key: str
    stage_name: str
    reached: int
    conversion_from_previous: float | None
    conversion_from_first: float | None
    drop_off: float | None
    lost_here: int | None
    amounts: list[FunnelAmount]


# --- pipeline ---------------------------------------------------------------------------------


class StageAmount(BaseModel):
    """Amount and weighted amount of one currency."""

    currency: str
    amount: Decimal
    weighted_amount: Decimal


class PipelineRow(BaseModel):
    """Open deals in one stage (now, as of a date, or on one day of a trend)."""

    date: dt.date | None = None
    group: str | None = None
    pipeline_id: uuid.UUID
    stage_id: uuid.UUID
    stage_key: str
    stage_name: str
    count: int
    amounts: list[StageAmount]


# --- win rate, cycle, velocity ----------------------------------------------------------------


class WinAmount(BaseModel):
    """Won and lost amounts of one currency."""

    currency: str
    won_amount: Decimal
    lost_amount: Decimal


class WinRateRow(BaseModel):
    """Deals closed in the period."""

    group: str | None = None
    won: int
    lost: int
    win_rate: float | None
    amounts: list[WinAmount]


class StageTime(BaseModel):
    """Stays in one stage that ended in the period."""

    stage_id: uuid.UUID
    stage_key: str
    stays: int
    stage_mean_days: float | None
    stage_median_days: float | None


class CycleRow(BaseModel):
    """Sales cycle of the deals won in the period, and time in each stage."""

    group: str | None = None
    won: int
    mean_days: float | None
    median_days: float | None
    p75_days: float | None
    time_in_stage: list[StageTime]


class VelocityRow(BaseModel):
    """Pipeline velocity of one currency."""

    group: str | None = None
    currency: str
    open_deals: int
    won: int
    lost: int
    win_rate: float | None
    mean_won_amount: Decimal | None
    mean_cycle_days: float | None
    velocity_per_day: Decimal | None


# --- forecast ---------------------------------------------------------------------------------


class ForecastAmount(BaseModel):
    """Open amounts of one currency closing in one month, in total and by forecast category."""

    currency: str
    amount: Decimal
    weighted_amount: Decimal
    commit_amount: Decimal
    best_case_amount: Decimal
    pipeline_amount: Decimal


class ForecastRow(BaseModel):
    """Open deals expected to close in one month (`none`: no expected close date)."""

    month: str
    count: int
    amounts: list[ForecastAmount]


class Attainment(BaseModel):
    """Won amount in the period against the targets within it, in one currency."""

    currency: str
    won_amount: Decimal
    target_amount: Decimal | None
    attainment: float | None


class ForecastReport(MetricReport[ForecastRow]):
    """Forecast rows and attainment against targets."""

    attainment: list[Attainment]


# --- leads and reps ---------------------------------------------------------------------------


class LeadFunnelRow(BaseModel):
    """The lead cohort of one group."""

    group: str | None = None
    created: int
    contacted: int
    qualified: int
    converted: int
    won: int
    contacted_rate: float | None
    qualified_rate: float | None
    converted_rate: float | None
    won_rate: float | None
    qualified_step_rate: float | None
    converted_step_rate: float | None
    won_step_rate: float | None
    speed_to_lead_median_minutes: float | None
    speed_to_lead_p90_minutes: float | None


class RepAmount(BaseModel):
    """A rep's won amount and target in one currency."""

    currency: str
    won_amount: Decimal
    target_amount: Decimal | None
    attainment: float | None


class RepRow(BaseModel):
    """One owner's numbers for the period."""

    owner_id: uuid.UUID
    owner_name: str
    team_id: uuid.UUID | None
    leads_created: int
    leads_contacted: int
    leads_converted: int
    deals_won: int
    deals_lost: int
    win_rate: float | None
    amounts: list[RepAmount]
