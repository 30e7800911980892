"""What every metric shares (DESIGN.md §7 common rules): the query (filters, period, group_by),
local periods in the organisation's timezone, role visibility as SQL, rounding, currency
conversion with dated rates, and the CSV form of a response.

Metrics are SQL over the base tables and their history; SQL does the counting and summing, grouped
small, and this module only does the final arithmetic (rates, means, conversion) exactly, with
`Decimal`, rounding once at the end.
"""

from __future__ import annotations

import decimal
import enum
import uuid
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, ValidationFailed
from app.models.common import Role
from app.models.lead import LeadSource
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


def rollup_sql(principal: Principal, query: MetricQuery) -> Sql:
    """Conditions on a deal rollup `r` (deal_open_rollup, deal_closed_rollup: owner, source, pipeline
    and currency are among its keys) for the filters and the caller's visibility, as deal_sql."""
    sql = Sql(where=["r.org_id = :org_id"], params={"org_id": principal.org_id})
    if query.pipeline_id is not None:
        sql.where.append("r.pipeline_id = :pipeline_id")
        sql.params["pipeline_id"] = query.pipeline_id
    if query.owner_id is not None:
        sql.where.append("r.owner_id = :owner_id")
        sql.params["owner_id"] = query.owner_id
    if query.team_id is not None or query.group_by == GroupBy.team:
        sql.join(OWNER_USER_JOIN.format(a="r"))
    if query.team_id is not None:
        sql.where.append("ou.team_id = :team_id")
        sql.params["team_id"] = query.team_id
    if query.source is not None:
        sql.where.append("r.source = :source")
        sql.params["source"] = query.source.value
    if query.currency is not None:
        sql.where.append("r.currency = :currency")
        sql.params["currency"] = query.currency
    visibility(sql, principal, "r.owner_id")
    return sql


def rollup_group(group_by: GroupBy | None) -> str:
    """The group key over a rollup `r` (months and weeks of its local `day`)."""
    if group_by in (GroupBy.month, GroupBy.week):
        if group_by == GroupBy.month:
            return "to_char(r.day, 'YYYY-MM')"
        return "to_char(date_trunc('week', r.day::timestamp), 'IYYY-\"W\"IW')"
    return group_expr(group_by, anchor="NULL", owner="r.owner_id", source="r.source")


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
