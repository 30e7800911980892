"""The cycle metric's counts, means and exact percentiles without sorting every duration.

`percentile_cont(p)` over N values is the value at rank floor(p·(N-1)), interpolated towards the
next one (PostgreSQL's percentile_cont_final_common and float8_lerp, in the same float8
arithmetic). So it needs N and one or two values at known ranks. N, the exact mean (avg's own
numeric division) and the count per duration bucket come from deal_duration_months (whole local
months) and deal_duration_days (the edge days) — per stage for stays, stage NULL for the won
deals' cycle —; the values from a walk of an index in (bucket, seconds) order, OFFSET k LIMIT 2,
index-only, starting at the bucket that holds the rank (k = the rank less the durations in lower
buckets). The rows are the ones the SQL of `wins.cycle` gives, so that SQL stays the definition and
the fallback for what needs the deals (filters, a caller who sees part of them, owner/team/source
groups); tests hold the two equal.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.metrics.common import GroupBy, Sql, fetch, local_midnight, rollup_group
from app.services.metrics.context import Context

log = structlog.get_logger("loudou.metrics")

MEDIAN = 0.5
P75 = 0.75

STAY_WALK = """
    SELECT s.seconds FROM deal_stage_stays s
    WHERE s.org_id = :org_id AND s.stage_id = :stage_id AND s.bucket >= :bucket
      AND s.left_at >= :t0 AND s.left_at < :t1
    ORDER BY s.bucket, s.seconds
    OFFSET :k LIMIT :m"""
WON_WALK = """
    SELECT f.cycle_seconds FROM deal_funnel_facts f
    WHERE f.org_id = :org_id AND f.status = 'won' AND f.cycle_bucket >= :bucket
      AND f.closed_at >= :t0 AND f.closed_at < :t1
    ORDER BY f.cycle_bucket, f.cycle_seconds
    OFFSET :k LIMIT :m"""


class Drift(Exception):
    """A rollup's count and its index disagree (should not happen; the caller falls back)."""


def applies(sql: Sql, group_by: GroupBy | None) -> bool:
    """Whether the rollups answer this query: no condition on the deals beyond the organisation
    (no filter, a caller who sees every deal) and no group that needs a deal's owner or lead."""
    return len(sql.where) == 1 and not sql.joins and group_by in (None, GroupBy.month, GroupBy.week)


def ranks(n: int, p: float) -> tuple[int, int, float]:
    """percentile_cont's rows (0-based) and interpolation fraction for `p` over `n` values."""
    pos = p * (n - 1)
    first, second = math.floor(pos), math.ceil(pos)
    return first, second, pos - first


def interpolate(first: float, second: float, proportion: float) -> float:
    """float8_lerp: first + proportion · (second - first), in float8."""
    return first + (proportion * (second - first))


def group_label(day: date, group_by: GroupBy | None) -> str | None:
    """The group of a local day, as `rollup_group` labels it in SQL."""
    if group_by == GroupBy.month:
        return f"{day.year:04d}-{day.month:02d}"
    if group_by == GroupBy.week:
        iso = day.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    return None


def sub_periods(start: date, end: date, group_by: GroupBy | None) -> dict[str | None, tuple[date, date]]:
    """Each group's local days [first, last + 1) within [start, end)."""
    if group_by not in (GroupBy.month, GroupBy.week):
        return {None: (start, end)}
    out: dict[str | None, tuple[date, date]] = {}
    day = start
    while day < end:
        if group_by == GroupBy.month:
            following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            following = day + timedelta(days=7 - day.weekday())
        out[group_label(day, group_by)] = (day, min(following, end))
        day = following
    return out


def _sub_period(periods: dict[str | None, tuple[date, date]], grp: str | None) -> tuple[date, date]:
    if grp not in periods:
        raise Drift(f"group {grp!r} outside the period")
    return periods[grp]


async def _walk(
    session: AsyncSession, statement: str, params: dict[str, Any], first: int, second: int, proportion: float
) -> float:
    """The value percentile_cont gives from the rows at `first` and `second` of the walk (`first`
    counted from where the walk starts)."""
    values = await fetch(session, statement, {**params, "k": first, "m": second - first + 1})
    if len(values) != second - first + 1:
        raise Drift(statement)
    if second == first:
        return float(values[0][0])
    return interpolate(float(values[0][0]), float(values[1][0]), proportion)


def whole_months(start: date, end: date) -> tuple[date, date]:
    """The first days [m0, m1) of the whole months within [start, end) (m0 == m1 == end: none)."""
    first = start if start.day == 1 else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    last = end.replace(day=1)
    return (first, last) if first < last else (end, end)


def _label(group_by: GroupBy | None, column: str) -> str:
    """The group of a rollup row by its local day or month `column`, as `rollup_group` labels it."""
    if group_by in (GroupBy.month, GroupBy.week):
        return rollup_group(group_by).replace("r.day", column)
    return "NULL::text"


@dataclass
class _Durations:
    """One group's durations of one stage (or of the won deals): count, mean, count per bucket."""

    count: int = 0
    mean: Any = None
    buckets: list[tuple[int, int]] = field(default_factory=list)

    def locate(self, rank: int) -> tuple[int, int]:
        """The bucket holding the duration at `rank` (0-based, in duration order) and its rank in a
        walk that starts at that bucket."""
        below = 0
        for bucket, n in self.buckets:
            if rank < below + n:
                return bucket, rank - below
            below += n
        raise Drift(f"rank {rank} past {below} durations")

    async def percentile(
        self, session: AsyncSession, statement: str, params: dict[str, Any], p: float
    ) -> float:
        """percentile_cont(p) of these durations, walking `statement` from the rank's bucket."""
        if self.count <= 0:
            raise Drift(f"count {self.count}")
        first, second, proportion = ranks(self.count, p)
        bucket, k = self.locate(first)
        return await _walk(
            session, statement, {**params, "bucket": bucket}, k, k + second - first, proportion
        )


async def _counts(
    session: AsyncSession, ctx: Context, params: dict[str, Any]
) -> dict[tuple[str | None, uuid.UUID | None], _Durations]:
    """Per group and stage (None: won deals), the count, mean and counts per bucket of the period."""
    group_by = ctx.query.group_by
    m0, m1 = (ctx.period.end, ctx.period.end)
    if group_by != GroupBy.week:  # weeks do not add up to months
        m0, m1 = whole_months(ctx.period.start, ctx.period.end)
    rows = await fetch(
        session,
        f"""
        WITH r AS (
          SELECT {_label(group_by, "m.month")} AS grp, m.stage_id, m.bucket, m.n, m.seconds
          FROM deal_duration_months m
          WHERE m.org_id = :org_id AND m.month >= :m0 AND m.month < :m1
          UNION ALL
          SELECT {_label(group_by, "d.day")}, d.stage_id, d.bucket, d.n, d.seconds
          FROM deal_duration_days d
          WHERE d.org_id = :org_id
            AND (d.day >= :d0 AND d.day < :m0 OR d.day >= :m1 AND d.day < :d1)),
        b AS (
          SELECT grp, stage_id, bucket, sum(n) AS n, sum(seconds) AS s
          FROM r GROUP BY 1, 2, 3
          HAVING sum(n) <> 0)
        SELECT grp, stage_id, bucket, n, sum(s) OVER w / sum(n) OVER w
        FROM b WINDOW w AS (PARTITION BY grp, stage_id)
        ORDER BY grp, stage_id, bucket""",
        {**params, "m0": m0, "m1": m1},
    )
    out: dict[tuple[str | None, uuid.UUID | None], _Durations] = defaultdict(_Durations)
    for grp, stage_id, bucket, n, mean in rows:
        durations = out[(grp, stage_id)]
        durations.count += n
        durations.mean = mean
        durations.buckets.append((bucket, n))
    return out


async def cycle_rows(
    session: AsyncSession, ctx: Context, params: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
    """The won rows (group, count, mean, median, p75 seconds) and the stay rows (group, stage_id,
    count, mean, median) `wins.cycle` would compute, from the rollups and index walks; None when a
    rollup and its index disagree (the caller then runs the SQL)."""
    periods = sub_periods(ctx.period.start, ctx.period.end, ctx.query.group_by)
    won: list[tuple[Any, ...]] = []
    stays: list[tuple[Any, ...]] = []
    try:
        for (grp, stage_id), durations in (await _counts(session, ctx, params)).items():
            d0, d1 = _sub_period(periods, grp)
            walk = {**params, "t0": local_midnight(d0, ctx.tz), "t1": local_midnight(d1, ctx.tz)}
            if stage_id is None:
                median = await durations.percentile(session, WON_WALK, walk, MEDIAN)
                p75 = await durations.percentile(session, WON_WALK, walk, P75)
                won.append((grp, durations.count, durations.mean, median, p75))
            else:
                walk["stage_id"] = stage_id
                median = await durations.percentile(session, STAY_WALK, walk, MEDIAN)
                stays.append((grp, stage_id, durations.count, durations.mean, median))
    except Drift as exc:
        log.warning("metrics.cycle.rollup_drift", detail=str(exc)[:200], org_id=str(ctx.principal.org_id))
        return None
    return won, stays
