"""The cycle metric's counts, means and exact percentiles without sorting every duration.

`percentile_cont(p)` over N values is the value at rank floor(p·(N-1)), interpolated towards the
next one (PostgreSQL's percentile_cont_final_common and float8_lerp, in the same float8
arithmetic). So it needs N and one or two values at known ranks: N (and the exact mean, as avg's
own numeric division) come from rollups kept per local day — deal_stay_days per stage and duration
bucket, deal_closed_rollup for won deals —, and the values from a walk of an index in duration
order (OFFSET k LIMIT 2, index-only): for stays only inside the bucket that holds rank k, whose
count of shorter stays the rollup gives. The rows are the ones the SQL of `wins.cycle` gives, so
that SQL stays the definition and the fallback for what needs the deals (filters, a caller who
sees part of them, owner/team/source groups); tests hold the two equal.
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
    WHERE f.org_id = :org_id AND f.status = 'won' AND f.closed_at >= :t0 AND f.closed_at < :t1
    ORDER BY f.cycle_seconds
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
    out: dict[str | None, tuple[date, date]] = {}
    day = start
    while day < end:
        label = group_label(day, group_by)
        first = out.get(label, (day, day))[0]
        out[label] = (first, day + timedelta(days=1))
        day += timedelta(days=1)
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


@dataclass
class _Stage:
    """One group's stays of one stage: count and mean, and the count per bucket."""

    count: int = 0
    mean: Any = None
    buckets: list[tuple[int, int]] = field(default_factory=list)

    def locate(self, rank: int) -> tuple[int, int]:
        """The bucket holding the stay at `rank` (0-based, in duration order) and its rank in the walk
        that starts at that bucket."""
        below = 0
        for bucket, n in self.buckets:
            if rank < below + n:
                return bucket, rank - below
            below += n
        raise Drift(f"rank {rank} past {below} stays")


async def _stay_rows(
    session: AsyncSession, ctx: Context, params: dict[str, Any], periods: dict[str | None, tuple[date, date]]
) -> list[tuple[Any, ...]]:
    """(group, stage_id, count, mean seconds, median seconds) of the stays that ended in the period."""
    group_by = ctx.query.group_by
    rows = await fetch(
        session,
        f"""
        WITH b AS (
          SELECT {rollup_group(group_by)} AS grp, r.stage_id, r.bucket, sum(r.n) AS n, sum(r.seconds) AS s
          FROM deal_stay_days r
          WHERE r.org_id = :org_id AND r.day >= :d0 AND r.day < :d1
          GROUP BY 1, 2, 3
          HAVING sum(r.n) <> 0)
        SELECT grp, stage_id, bucket, n, sum(s) OVER w / sum(n) OVER w
        FROM b WINDOW w AS (PARTITION BY grp, stage_id)
        ORDER BY grp, stage_id, bucket""",
        params,
    )
    stages: dict[tuple[str | None, uuid.UUID], _Stage] = defaultdict(_Stage)
    for grp, stage_id, bucket, n, mean in rows:
        stage = stages[(grp, stage_id)]
        stage.count += n
        stage.mean = mean
        stage.buckets.append((bucket, n))
    out = []
    for (grp, stage_id), stage in stages.items():
        first, second, proportion = ranks(stage.count, MEDIAN)
        bucket, k = stage.locate(first)
        d0, d1 = _sub_period(periods, grp)
        walk = {
            **params,
            "stage_id": stage_id,
            "bucket": bucket,
            "t0": local_midnight(d0, ctx.tz),
            "t1": local_midnight(d1, ctx.tz),
        }
        median = await _walk(session, STAY_WALK, walk, k, k + second - first, proportion)
        out.append((grp, stage_id, stage.count, stage.mean, median))
    return out


async def _won_rows(
    session: AsyncSession, ctx: Context, params: dict[str, Any], periods: dict[str | None, tuple[date, date]]
) -> list[tuple[Any, ...]]:
    """(group, count, mean seconds, median, p75) of the deals won in the period."""
    rows = await fetch(
        session,
        f"""
        SELECT {rollup_group(ctx.query.group_by)}, sum(r.n), sum(r.cycle_seconds) / sum(r.n)
        FROM deal_closed_rollup r
        WHERE r.org_id = :org_id AND r.status = 'won' AND r.day >= :d0 AND r.day < :d1
        GROUP BY 1
        HAVING sum(r.n) <> 0""",
        params,
    )
    out = []
    for grp, count, mean in rows:
        d0, d1 = _sub_period(periods, grp)
        walk = {**params, "t0": local_midnight(d0, ctx.tz), "t1": local_midnight(d1, ctx.tz)}
        values = []
        for p in (MEDIAN, P75):
            first, second, proportion = ranks(count, p)
            values.append(await _walk(session, WON_WALK, walk, first, second, proportion))
        out.append((grp, count, mean, *values))
    return out


async def cycle_rows(
    session: AsyncSession, ctx: Context, params: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
    """The won rows and the stay rows `wins.cycle` would compute, from the rollups and index walks;
    None when a rollup and its index disagree (the caller then runs the SQL)."""
    periods = sub_periods(ctx.period.start, ctx.period.end, ctx.query.group_by)
    try:
        return await _won_rows(session, ctx, params, periods), await _stay_rows(session, ctx, params, periods)
    except Drift as exc:
        log.warning("metrics.cycle.rollup_drift", detail=str(exc)[:200], org_id=str(ctx.principal.org_id))
        return None
