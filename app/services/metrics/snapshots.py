"""Daily pipeline snapshots and the pipeline trend read from them.

A snapshot of local day D is the pipeline as of the end of D, aggregated per pipeline, stage, owner
(on that day) and currency — not per deal — computed by the same as-of reconstruction the pipeline
metric uses, so both agree. The arq cron takes yesterday's (and fills the last week's gaps); a history
import drops the snapshots from its earliest date on, since it rewrote that past. The trend reads
snapshots where a day has one and reconstructs the days that have none.
"""

from __future__ import annotations

import enum
import uuid
import zoneinfo
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.common import Role
from app.models.metric_reports import MetricReport, PipelineRow
from app.security import Principal
from app.services.metrics.common import (
    MetricQuery,
    Sql,
    deal_sql,
    end_of_day,
    fetch,
    local_today,
    org_timezone,
)
from app.services.metrics.context import Context, context, envelope
from app.services.metrics.pipeline import as_of_statement, build_rows, open_rows, snapshot_rows

BACKFILL_DAYS = 7


class Interval(enum.StrEnum):
    """Trend points: the last day of each day, ISO week or month."""

    day = "day"
    week = "week"
    month = "month"


async def take_snapshot(session: AsyncSession, org_id: uuid.UUID, day: date, tz: str) -> int:
    """(Re)write the snapshot of local day `day`; returns the number of rows. Idempotent."""
    params = {"org_id": org_id, "day": day}
    await fetch(
        session, "DELETE FROM pipeline_snapshots WHERE org_id = :org_id AND day = :day RETURNING 1", params
    )
    sql = Sql(where=["d.org_id = :org_id"], params={"org_id": org_id})
    statement = as_of_statement(sql, group="NULL::text", owner_at=True)
    result = await fetch(
        session,
        f"""
        WITH agg AS ({statement})
        INSERT INTO pipeline_snapshots
          (org_id, id, day, pipeline_id, stage_id, owner_id, currency, count, amount, weighted_amount)
        SELECT :org_id, gen_random_uuid(), :day, s.pipeline_id, agg.stage_id, agg.owner_at, agg.currency,
               agg.n, COALESCE(agg.amount, 0), COALESCE(agg.weighted, 0)
        FROM agg
        JOIN stages s ON s.org_id = :org_id AND s.id = agg.stage_id
        RETURNING 1""",
        {**params, "at": end_of_day(day, tz)},
    )
    await fetch(
        session,
        "INSERT INTO pipeline_snapshot_days (org_id, id, day, taken_at) "
        "VALUES (:org_id, gen_random_uuid(), :day, now()) "
        "ON CONFLICT (org_id, day) DO UPDATE SET taken_at = now() RETURNING 1",
        params,
    )
    return len(result)


async def organisation_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every organisation (the snapshot job walks them, one transaction each)."""
    return [r[0] for r in await fetch(session, "SELECT id FROM organisations ORDER BY id", {})]


async def snapshot_missing_days(
    session: AsyncSession, org_id: uuid.UUID, *, days: int = BACKFILL_DAYS
) -> int:
    """Snapshot the last `days` local days up to yesterday that have none; returns days taken (0 when
    another worker holds this organisation's snapshot lock: it is taking them)."""
    lock = "SELECT pg_try_advisory_xact_lock(hashtext('loudou:snapshots:' || CAST(:org AS text)))"
    if not (await fetch(session, lock, {"org": str(org_id)}))[0][0]:
        return 0
    tz = await org_timezone(session, org_id)
    yesterday = local_today(tz) - timedelta(days=1)
    first = yesterday - timedelta(days=days - 1)
    rows = await fetch(
        session,
        "SELECT day FROM pipeline_snapshot_days WHERE org_id = :org_id AND day >= :first",
        {"org_id": org_id, "first": first},
    )
    have = {r[0] for r in rows}
    taken = 0
    day = first
    while day <= yesterday:
        if day not in have:
            await take_snapshot(session, org_id, day, tz)
            taken += 1
        day += timedelta(days=1)
    return taken


async def local_day(session: AsyncSession, org_id: uuid.UUID, at: datetime) -> date:
    """The organisation's local date of an instant."""
    return at.astimezone(zoneinfo.ZoneInfo(await org_timezone(session, org_id))).date()


async def forget_from(session: AsyncSession, org_id: uuid.UUID, day: date) -> None:
    """Drop the snapshots of `day` and later (their past was rewritten, say by an import)."""
    params = {"org_id": org_id, "day": day}
    await fetch(
        session,
        "DELETE FROM pipeline_snapshot_days WHERE org_id = :org_id AND day >= :day RETURNING 1",
        params,
    )
    await fetch(
        session, "DELETE FROM pipeline_snapshots WHERE org_id = :org_id AND day >= :day RETURNING 1", params
    )


def trend_days(start: date, end: date, interval: Interval) -> list[date]:
    """The last day of each interval in [start, end) (the last point is end - 1 day)."""
    points: list[date] = []
    day = start
    last = end - timedelta(days=1)
    while day <= last:
        if interval == Interval.day:
            bucket_end = day
        elif interval == Interval.week:
            bucket_end = day + timedelta(days=6 - day.weekday())
        else:
            next_month = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            bucket_end = next_month - timedelta(days=1)
        point = min(bucket_end, last)
        points.append(point)
        day = point + timedelta(days=1)
    return points


def _snapshot_sql(ctx: Context) -> Sql:
    """Conditions on snapshot rows `ps` for the filters (owner = the owner on that day) and visibility."""
    q, principal = ctx.query, ctx.principal
    sql = Sql(where=["true"], params={"org_id": principal.org_id})
    if q.owner_id is not None:
        sql.where.append("ps.owner_id = :owner_id")
        sql.params["owner_id"] = q.owner_id
    if q.team_id is not None:
        sql.where.append(
            "ps.owner_id IN (SELECT tu.id FROM users tu WHERE tu.org_id = :org_id AND tu.team_id = :team_id)"
        )
        sql.params["team_id"] = q.team_id
    if principal.role == Role.rep or (principal.role == Role.manager and principal.team_id is None):
        sql.where.append("ps.owner_id = :viewer_id")
        sql.params["viewer_id"] = principal.user_id
    elif principal.role == Role.manager:
        sql.where.append(
            "(ps.owner_id = :viewer_id OR ps.owner_id IN "
            "(SELECT vu.id FROM users vu WHERE vu.org_id = :org_id AND vu.team_id = :viewer_team_id))"
        )
        sql.params["viewer_id"] = principal.user_id
        sql.params["viewer_team_id"] = principal.team_id
    return sql


async def trend(
    session: AsyncSession, principal: Principal, query: MetricQuery, *, interval: Interval
) -> MetricReport[PipelineRow]:
    """The pipeline as of the last day of each interval: snapshots where taken, else reconstructed."""
    ctx = await context(session, principal, query, convertible=False)
    points = trend_days(ctx.period.start, ctx.period.end, interval)
    have: set[date] = set()
    snap_rows: dict[date, list[Any]] = {}
    if query.source is None and points:
        sql = _snapshot_sql(ctx)
        have, snap_rows = await snapshot_rows(session, ctx, points, where=sql.where_sql, params=sql.params)
    out: list[PipelineRow] = []
    for day in points:
        if day in have:
            rows_of_day = snap_rows.get(day, [])
        else:
            sql = deal_sql(principal, query, currency_column=None)
            if query.currency is not None:
                sql.params["currency"] = query.currency
            rows_of_day = await open_rows(
                session, ctx, at=end_of_day(day, ctx.tz), group="NULL::text", sql=sql
            )
        out.extend(build_rows(ctx, rows_of_day, day=day, on=day))
    report = envelope(ctx, "pipeline_trend")
    report["filters"] = {**report["filters"], "interval": interval}
    return MetricReport[PipelineRow].model_validate({**report, "rows": out})
