"""What every metric shares (DESIGN.md §7 common rules): the query (filters, period, group_by),
local periods in the organisation's timezone, role visibility as SQL, rounding, currency
conversion with dated rates, and the CSV form of a response.

Metrics are SQL over the base tables and their history; SQL does the counting and summing, grouped
small, and this module only does the final arithmetic (rates, means, conversion) exactly, with
`Decimal`, rounding once at the end.
"""

from __future__ import annotations

import csv
import decimal
import enum
import io
import uuid
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, ValidationFailed
from app.models.common import Role
from app.models.lead import LeadSource
from app.models.metric_reports import RateUsed
from app.models.organisation import Organisation
from app.money import round_money
from app.security import Principal

DEFINITION_VERSION = 1

# Sums of a million amounts times a rate with ten decimals need more than the default 28 digits.
EXACT = decimal.Context(prec=60, rounding=ROUND_HALF_UP)


class GroupBy(enum.StrEnum):
    """Dimensions a metric may be split by (each metric says which it accepts)."""

    owner = "owner"
    team = "team"
    source = "source"
    intake_source = "intake_source"
    month = "month"
    week = "week"


@dataclass(frozen=True)
class MetricQuery:
    """The filters of one metrics request, as the router parsed them."""

    from_: date | None = None
    to: date | None = None
    pipeline_id: uuid.UUID | None = None
    owner_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    source: LeadSource | None = None
    currency: str | None = None
    group_by: GroupBy | None = None
    convert_to: str | None = None
    as_of: date | None = None

    def echo(self) -> dict[str, Any]:
        """The filters as given (the response echoes them)."""
        return {
            "from": self.from_,
            "to": self.to,
            "pipeline_id": self.pipeline_id,
            "owner_id": self.owner_id,
            "team_id": self.team_id,
            "source": self.source,
            "currency": self.currency,
            "group_by": self.group_by,
            "convert_to": self.convert_to,
            "as_of": self.as_of,
        }


@dataclass(frozen=True)
class Period:
    """[start, end) local dates and the instants they begin and end at, in the org's timezone."""

    tz: str
    start: date
    end: date
    start_at: datetime
    end_at: datetime
    today: date


def local_midnight(day: date, tz: str) -> datetime:
    """The instant local day `day` begins in timezone `tz`."""
    return datetime.combine(day, time(0), tzinfo=zoneinfo.ZoneInfo(tz))


def end_of_day(day: date, tz: str) -> datetime:
    """ "As of D": the instant at the end of local day D (the start of the next one)."""
    return local_midnight(day + timedelta(days=1), tz)


def local_today(tz: str, now: datetime | None = None) -> date:
    """Today's date in the timezone."""
    return (now or datetime.now(zoneinfo.ZoneInfo(tz))).astimezone(zoneinfo.ZoneInfo(tz)).date()


def invalid(field_name: str, code: str, message: str) -> ValidationFailed:
    """A 422 naming one parameter."""
    return ValidationFailed(message, errors=[FieldError(field=field_name, code=code, message=message)])


async def org_timezone(session: AsyncSession, org_id: uuid.UUID) -> str:
    """The organisation's timezone (settings.timezone)."""
    org = await session.get(Organisation, org_id)
    return org.typed_settings().timezone if org else "UTC"


def resolve_period(query: MetricQuery, tz: str) -> Period:
    """The period of the query; by default the year up to and including today (local)."""
    today = local_today(tz)
    end = query.to or today + timedelta(days=1)
    start = query.from_ or _one_year_before(end)
    if start >= end:
        raise invalid("from", "empty_period", "`from` must be before `to` (the period is [from, to))")
    return Period(tz, start, end, local_midnight(start, tz), local_midnight(end, tz), today)


def _one_year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


# --- rounding (the only places metrics round) -------------------------------------------------

FOUR = Decimal("0.0001")
TWO = Decimal("0.01")
ONE = Decimal("0.1")
SECONDS_PER_DAY = Decimal(86400)


def ratio(numerator: Decimal | int | None, denominator: Decimal | int | None) -> float | None:
    """A rate: a fraction rounded half-up to 4 decimals; null when the denominator is 0."""
    if numerator is None or not denominator:
        return None
    value = EXACT.divide(Decimal(numerator), Decimal(denominator))
    return float(value.quantize(FOUR, rounding=ROUND_HALF_UP))


def complement(rate: float | None) -> float | None:
    """1 - rate, for drop-off (rate already has 4 decimals, so this is exact)."""
    if rate is None:
        return None
    return float(Decimal(1) - Decimal(str(rate)))


def to_decimal(value: Any) -> Decimal | None:
    """A SQL number (numeric or double precision) as a Decimal."""
    if value is None:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def days(seconds: Any) -> float | None:
    """Seconds as days: seconds / 86,400 rounded half-up to 2 decimals."""
    value = to_decimal(seconds)
    if value is None:
        return None
    return float(EXACT.divide(value, SECONDS_PER_DAY).quantize(TWO, rounding=ROUND_HALF_UP))


def minutes(seconds: Any) -> float | None:
    """Seconds as minutes, rounded half-up to 1 decimal (speed to lead)."""
    value = to_decimal(seconds)
    if value is None:
        return None
    return float(EXACT.divide(value, Decimal(60)).quantize(ONE, rounding=ROUND_HALF_UP))


def money(amount: Decimal | None, currency: str) -> Decimal:
    """An exact sum rounded to the currency's minor unit, at the end."""
    return round_money(amount if amount is not None else Decimal(0), currency)


# --- SQL pieces -------------------------------------------------------------------------------


@dataclass
class Sql:
    """Joins, conditions and parameters of a metric's base query, built from the filters."""

    joins: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def join(self, clause: str) -> None:
        """Add a join once."""
        if clause not in self.joins:
            self.joins.append(clause)

    @property
    def join_sql(self) -> str:
        """The joins as SQL."""
        return "\n".join(self.joins)

    @property
    def where_sql(self) -> str:
        """The conditions, AND-ed."""
        return " AND ".join(self.where) if self.where else "true"


OWNER_USER_JOIN = "LEFT JOIN users ou ON ou.org_id = {a}.org_id AND ou.id = {a}.owner_id"
DEAL_LEAD_JOIN = "LEFT JOIN leads sl ON sl.org_id = d.org_id AND sl.id = d.lead_id"


def visibility(sql: Sql, principal: Principal, owner_column: str) -> None:
    """A rep sees their own numbers, a manager their team's (and their own), admins and viewers all."""
    if principal.role in (Role.admin, Role.viewer):
        return
    sql.params["viewer_id"] = principal.user_id
    if principal.role == Role.manager and principal.team_id is not None:
        sql.params["viewer_team_id"] = principal.team_id
        sql.where.append(
            f"({owner_column} = :viewer_id OR {owner_column} IN "
            "(SELECT vu.id FROM users vu WHERE vu.org_id = :org_id AND vu.team_id = :viewer_team_id))"
        )
    else:
        sql.where.append(f"{owner_column} = :viewer_id")


def deal_sql(principal: Principal, query: MetricQuery, *, currency_column: str | None = "d.currency") -> Sql:
    """Conditions on deals `d` for the filters and the caller's visibility."""
    sql = Sql(where=["d.org_id = :org_id"], params={"org_id": principal.org_id})
    if query.pipeline_id is not None:
        sql.where.append("d.pipeline_id = :pipeline_id")
        sql.params["pipeline_id"] = query.pipeline_id
    if query.owner_id is not None:
        sql.where.append("d.owner_id = :owner_id")
        sql.params["owner_id"] = query.owner_id
    if query.team_id is not None or query.group_by == GroupBy.team:
        sql.join(OWNER_USER_JOIN.format(a="d"))
    if query.team_id is not None:
        sql.where.append("ou.team_id = :team_id")
        sql.params["team_id"] = query.team_id
    if query.source is not None or query.group_by == GroupBy.source:
        sql.join(DEAL_LEAD_JOIN)
    if query.source is not None:
        sql.where.append("sl.source = :source")
        sql.params["source"] = query.source.value
    if query.currency is not None and currency_column is not None:
        sql.where.append(f"{currency_column} = :currency")
        sql.params["currency"] = query.currency
    visibility(sql, principal, "d.owner_id")
    return sql


def lead_sql(principal: Principal, query: MetricQuery) -> Sql:
    """Conditions on leads `le` for the filters (pipeline and currency do not apply) and visibility."""
    sql = Sql(
        where=["le.org_id = :org_id", "le.duplicate_of IS NULL", "le.deleted_at IS NULL"],
        params={"org_id": principal.org_id},
    )
    if query.owner_id is not None:
        sql.where.append("le.owner_id = :owner_id")
        sql.params["owner_id"] = query.owner_id
    if query.team_id is not None or query.group_by == GroupBy.team:
        sql.join(OWNER_USER_JOIN.format(a="le"))
    if query.team_id is not None:
        sql.where.append("ou.team_id = :team_id")
        sql.params["team_id"] = query.team_id
    if query.source is not None:
        sql.where.append("le.source = :source")
        sql.params["source"] = query.source.value
    visibility(sql, principal, "le.owner_id")
    return sql


def group_expr(
    group_by: GroupBy | None, *, anchor: str, owner: str, source: str, intake_source: str = "NULL"
) -> str:
    """The SQL of the group key (text), `anchor` being the timestamp months and weeks are taken from."""
    if group_by is None:
        return "NULL::text"
    return {
        GroupBy.owner: f"{owner}::text",
        GroupBy.team: "ou.team_id::text",
        GroupBy.source: f"{source}::text",
        GroupBy.intake_source: f"{intake_source}::text",
        GroupBy.month: f"to_char({anchor} AT TIME ZONE :tz, 'YYYY-MM')",
        GroupBy.week: f"to_char(date_trunc('week', {anchor} AT TIME ZONE :tz), 'IYYY-\"W\"IW')",
    }[group_by]


def check_group_by(query: MetricQuery, allowed: Iterable[GroupBy]) -> None:
    """422 for a group_by this metric does not support."""
    allowed = list(allowed)
    if query.group_by is not None and query.group_by not in allowed:
        names = ", ".join(g.value for g in allowed) or "none"
        raise invalid("group_by", "unsupported", f"this metric groups by: {names}")


async def fetch(session: AsyncSession, statement: str, params: dict[str, Any]) -> list[Any]:
    """Run one metrics statement (under the read session's statement timeout)."""
    return list((await session.execute(text(statement), params)).all())


# --- currency conversion ----------------------------------------------------------------------


class Converter:
    """Converts sums per (currency, local date) into `target` at the organisation's dated rates:
    the rate of the latest date on or before the deal's date. A missing rate is a 422 naming it."""

    def __init__(self, target: str, rates: dict[str, list[tuple[date, Decimal]]]) -> None:
        self.target = target
        self.rates = rates  # from currency -> [(date, rate)] ascending
        self.used: dict[tuple[str, date], Decimal] = {}

    @classmethod
    async def load(cls, session: AsyncSession, org_id: uuid.UUID, target: str) -> Converter:
        """Every rate into `target` of the organisation."""
        rows = await fetch(
            session,
            "SELECT from_currency, date, rate FROM exchange_rates "
            "WHERE org_id = :org_id AND to_currency = :target ORDER BY from_currency, date",
            {"org_id": org_id, "target": target},
        )
        rates: dict[str, list[tuple[date, Decimal]]] = {}
        for from_currency, day, rate in rows:
            rates.setdefault(from_currency, []).append((day, Decimal(rate)))
        return cls(target, rates)

    def rate(self, currency: str, day: date) -> Decimal:
        """The rate for one currency on one local date."""
        if currency == self.target:
            return Decimal(1)
        found = None
        for rate_day, rate in self.rates.get(currency, []):
            if rate_day > day:
                break
            found = (rate_day, rate)
        if found is None:
            raise ValidationFailed(
                f"No exchange rate {currency}->{self.target} on or before {day.isoformat()}.",
                errors=[
                    FieldError(
                        field="convert_to",
                        code="missing_exchange_rate",
                        message=f"{currency}->{self.target} on or before {day.isoformat()}",
                    )
                ],
                extra={"missing_rate": {"from": currency, "to": self.target, "date": day.isoformat()}},
            )
        self.used[(currency, found[0])] = found[1]
        return found[1]

    def convert(self, amount: Decimal | None, currency: str, day: date) -> Decimal:
        """amount × rate, exact."""
        if amount is None:
            return Decimal(0)
        return EXACT.multiply(Decimal(amount), self.rate(currency, day))

    def rates_used(self) -> list[RateUsed]:
        """The dated rates used, for the response."""
        return [
            RateUsed(from_currency=c, to_currency=self.target, date=d, rate=r)
            for (c, d), r in sorted(self.used.items())
        ]


class Money:
    """Exact sums per currency (converted into one when a converter is given)."""

    def __init__(self, converter: Converter | None) -> None:
        self.converter = converter
        self.sums: dict[str, Decimal] = {}

    def add(self, amount: Any, currency: str, day: date | None = None) -> None:
        """Add an amount of a currency (day: the local date its conversion rate is taken at)."""
        if amount is None:
            amount = Decimal(0)
        if self.converter is not None:
            assert day is not None
            self.sums[self.converter.target] = EXACT.add(
                self.sums.get(self.converter.target, Decimal(0)),
                self.converter.convert(Decimal(amount), currency, day),
            )
        else:
            self.sums[currency] = EXACT.add(self.sums.get(currency, Decimal(0)), Decimal(amount))

    def get(self, currency: str) -> Decimal:
        """The exact sum of one currency (0 when none)."""
        return self.sums.get(currency, Decimal(0))

    def currencies(self) -> list[str]:
        """Currencies seen, sorted."""
        return sorted(self.sums)


# --- responses and CSV ------------------------------------------------------------------------


def flatten(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """CSV lines of JSON rows: scalars kept; a row's one list of objects becomes one line per item
    (its keys joined to the row's), or one line with those columns empty when the list is empty."""
    for row in rows:
        scalars = {k: v for k, v in row.items() if not isinstance(v, list)}
        nested = [(k, v) for k, v in row.items() if isinstance(v, list)]
        if not nested:
            yield scalars
            continue
        _, items = nested[0]
        if not items:
            yield scalars
            continue
        for item in items:
            yield {**scalars, **item}


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (columns in first-seen order; empty for null)."""
    lines = list(flatten(rows))
    columns: list[str] = []
    for line in lines:
        for key in line:
            if key not in columns:
                columns.append(key)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for line in lines:
        writer.writerow({k: _csv_value(line.get(k)) for k in columns})
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


# --- the context of one request ---------------------------------------------------------------


@dataclass(frozen=True)
class StageInfo:
    """A stage as metrics need it."""

    id: uuid.UUID
    pipeline_id: uuid.UUID
    key: str
    name: str
    kind: str
    position: int
    forecast_category: str
    live: bool
    pipeline_rank: int


@dataclass
class Context:
    """One metrics request: who asks, the filters, the period, the stages, the converter."""

    principal: Principal
    query: MetricQuery
    period: Period
    stages: dict[uuid.UUID, StageInfo]
    converter: Converter | None

    @property
    def tz(self) -> str:
        """The organisation's timezone."""
        return self.period.tz

    def base_params(self) -> dict[str, Any]:
        """Parameters every statement may use."""
        return {
            "org_id": self.principal.org_id,
            "tz": self.tz,
            "t0": self.period.start_at,
            "t1": self.period.end_at,
            "today": self.period.today,
        }

    def conversion_day(self, closed_column: str, open_day: str = ":today") -> str:
        """SQL of the local date a deal's amount converts at (close date, else `open_day`); NULL
        without convert_to, so grouping by it costs nothing then."""
        if self.converter is None:
            return "NULL::date"
        return f"COALESCE(({closed_column} AT TIME ZONE :tz)::date, {open_day})"

    def new_money(self) -> Money:
        """An exact per-currency (or converted) accumulator."""
        return Money(self.converter)

    def default_pipeline_id(self) -> uuid.UUID | None:
        """The organisation's default pipeline."""
        return next((s.pipeline_id for s in self.stages.values() if s.pipeline_rank == 0), None)

    def ordered_stages(self, pipeline_id: uuid.UUID | None = None) -> list[StageInfo]:
        """Stages in pipeline order (the default pipeline first), then position."""
        stages = [s for s in self.stages.values() if pipeline_id is None or s.pipeline_id == pipeline_id]
        return sorted(stages, key=lambda s: (s.pipeline_rank, str(s.pipeline_id), s.position, str(s.id)))


async def stage_catalog(session: AsyncSession, org_id: uuid.UUID) -> tuple[str, dict[uuid.UUID, StageInfo]]:
    """The organisation's timezone and every stage (deleted ones too: history points at them), in
    one round trip."""
    rows = await fetch(
        session,
        "SELECT COALESCE(o.settings->>'timezone', 'UTC'), s.id, s.pipeline_id, s.key, "
        "COALESCE(NULLIF(s.name_en, ''), s.name), s.kind, s.position, s.forecast_category, "
        "s.deleted_at IS NULL, CASE WHEN p.is_default THEN 0 ELSE 1 END "
        "FROM organisations o "
        "LEFT JOIN stages s ON s.org_id = o.id "
        "LEFT JOIN pipelines p ON p.org_id = s.org_id AND p.id = s.pipeline_id "
        "WHERE o.id = :org_id",
        {"org_id": org_id},
    )
    tz = rows[0][0] if rows else "UTC"
    return tz, {r[1]: StageInfo(*r[1:]) for r in rows if r[1] is not None}


async def context(
    session: AsyncSession,
    principal: Principal,
    query: MetricQuery,
    *,
    group_by: Iterable[GroupBy] = (),
    convertible: bool = True,
) -> Context:
    """Check the query against what the metric supports and resolve what every metric needs."""
    check_group_by(query, group_by)
    if query.convert_to is not None and not convertible:
        raise invalid("convert_to", "unsupported", "this metric reports per currency only")
    tz, stages = await stage_catalog(session, principal.org_id)
    period = resolve_period(query, tz)
    converter = (
        await Converter.load(session, principal.org_id, query.convert_to)
        if query.convert_to is not None
        else None
    )
    return Context(principal, query, period, stages, converter)


def envelope(ctx: Context, metric: str) -> dict[str, Any]:
    """The common part of every response."""
    return {
        "metric": metric,
        "definition_version": DEFINITION_VERSION,
        "filters": ctx.query.echo(),
        "period": {"from_": ctx.period.start, "to": ctx.period.end, "timezone": ctx.tz},
        "rates_used": ctx.converter.rates_used() if ctx.converter else [],
    }
