"""Open pipeline now or as of any past date, reconstructed from stage and field history
(DESIGN.md §7 "Pipeline as of D")."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.common import Role
from app.models.metric_reports import MetricReport, PipelineRow, StageAmount
from app.security import Principal
from app.services.metrics.common import (
    GroupBy,
    MetricQuery,
    Sql,
    deal_sql,
    end_of_day,
    fetch,
    group_expr,
    money,
    rollup_group,
    rollup_sql,
)
from app.services.metrics.context import Context, context, envelope
from app.services.metrics.conversion import Money

GROUPS = (GroupBy.owner, GroupBy.team, GroupBy.source)
ALL_SEEING = (Role.admin, Role.viewer)


TRACKED = ("amount", "currency", "probability", "owner_id")


def _field(field: str, current: str, cast: str) -> str:
    """A tracked field's value at the instant: the last change before it, else the previous value of
    the first change after it (the created value), else (never changed) the current value."""
    return (
        f"CASE WHEN b.has_{field} THEN (b.{field} #>> '{{}}')::{cast} "
        f"WHEN a.has_{field} THEN (a.{field} #>> '{{}}')::{cast} ELSE {current} END"
    )


def _pivot(value: str, order: str) -> str:
    """Per deal, for each tracked field: whether a change is there, and the value of the first one in
    `order` (one pass over the changes, grouped by deal)."""
    return ",\n".join(
        f"bool_or(f.field = '{name}') AS has_{name}, "
        f"(array_agg(f.{value} ORDER BY {order}) FILTER (WHERE f.field = '{name}'))[1] AS {name}"
        for name in TRACKED
    )


def as_of_statement(sql: Sql, *, group: str, owner_at: bool = False) -> str:
    """Open deals at the instant :at grouped by (group, stage, currency, owner?): count, Σ amount,
    Σ amount × probability / 100 — every value as it was at the instant (stage and field history)."""
    owner = _field("owner_id", "d.owner_id", "uuid") if owner_at else "NULL::uuid"
    currency_filter = "AND x.currency = :currency" if "currency" in sql.params else ""
    fields = ", ".join(f"'{name}'" for name in TRACKED)
    return f"""
        WITH st AS (
          SELECT DISTINCT ON (h.deal_id) h.deal_id, h.to_stage_id
          FROM deal_stage_history h
          WHERE h.org_id = :org_id AND h.at < :at
          ORDER BY h.deal_id, h.at DESC, h.id DESC
        ), open_deals AS (
          SELECT st.deal_id, st.to_stage_id FROM st
          JOIN stages s ON s.org_id = :org_id AND s.id = st.to_stage_id AND s.kind = 'open'
        ), b AS (
          SELECT f.deal_id, {_pivot("new_value", "f.at DESC, f.id DESC")}
          FROM deal_field_history f JOIN open_deals o ON o.deal_id = f.deal_id
          WHERE f.org_id = :org_id AND f.at < :at AND f.field IN ({fields})
          GROUP BY f.deal_id
        ), a AS (
          SELECT f.deal_id, {_pivot("old_value", "f.at, f.id")}
          FROM deal_field_history f JOIN open_deals o ON o.deal_id = f.deal_id
          WHERE f.org_id = :org_id AND f.at >= :at AND f.field IN ({fields})
          GROUP BY f.deal_id
        ), x AS (
          SELECT {group} AS grp, o.to_stage_id AS stage_id, {owner} AS owner_at,
                 {_field("currency", "d.currency", "text")} AS currency,
                 {_field("amount", "d.amount", "numeric")} AS amount,
                 {_field("probability", "d.probability", "numeric")} AS probability
          FROM open_deals o
          JOIN deals d ON d.org_id = :org_id AND d.id = o.deal_id
          {sql.join_sql}
          LEFT JOIN b ON b.deal_id = o.deal_id
          LEFT JOIN a ON a.deal_id = o.deal_id
          WHERE {sql.where_sql} AND d.created_at < :at
        )
        SELECT x.grp, x.stage_id, x.currency, x.owner_at, count(*) AS n, sum(x.amount) AS amount,
               sum(x.amount * x.probability / 100) AS weighted
        FROM x WHERE true {currency_filter}
        GROUP BY 1, 2, 3, 4"""


def now_statement(sql: Sql, *, group: str) -> str:
    """Open deals now, from the open-deal rollup (a trigger keeps it equal to the same sums over the
    deals table; as of now needs no history, nothing lies after now)."""
    return f"""
        SELECT {group} AS grp, r.stage_id, r.currency, NULL::uuid, sum(r.n), sum(r.amount), sum(r.weighted)
        FROM deal_open_rollup r {sql.join_sql}
        WHERE {sql.where_sql}
        GROUP BY 1, 2, 3, 4
        HAVING sum(r.n) <> 0"""


async def open_rows(
    session: AsyncSession, ctx: Context, *, at: datetime | None, group: str, sql: Sql
) -> list[Any]:
    """(group, stage, currency, owner, count, amount, weighted) of the deals open at `at` (None: now,
    from the rollup with the context's filters; `group` and `sql` are for the reconstruction)."""
    if at is None:
        now = rollup_sql(ctx.principal, ctx.query)
        statement = now_statement(now, group=rollup_group(ctx.query.group_by))
        return await fetch(session, statement, {**ctx.base_params(), **now.params})
    params = {**ctx.base_params(), **sql.params}
    return await fetch(session, as_of_statement(sql, group=group), {**params, "at": at})


def build_rows(ctx: Context, rows: list[Any], *, day: date, on: date | None = None) -> list[PipelineRow]:
    """Pipeline rows in stage order from grouped (group, stage, currency, _, count, amount, weighted)."""
    counts: dict[tuple[str | None, Any], int] = defaultdict(int)
    amounts: dict[tuple[str | None, Any], Money] = {}
    weighted: dict[tuple[str | None, Any], Money] = {}
    for grp, stage_id, currency, _, count, amount, weight in rows:
        key = (grp, stage_id)
        counts[key] += count
        amounts.setdefault(key, ctx.new_money()).add(amount, currency, day)
        weighted.setdefault(key, ctx.new_money()).add(weight, currency, day)
    order = {s.id: i for i, s in enumerate(ctx.ordered_stages())}
    out = []
    for grp, stage_id in sorted(counts, key=lambda k: (k[0] is None, k[0] or "", order.get(k[1], 1 << 30))):
        stage = ctx.stages[stage_id]
        a, w = amounts[(grp, stage_id)], weighted[(grp, stage_id)]
        out.append(
            PipelineRow(
                date=on,
                group=grp,
                pipeline_id=stage.pipeline_id,
                stage_id=stage_id,
                stage_key=stage.key,
                stage_name=stage.name,
                count=counts[(grp, stage_id)],
                amounts=[
                    StageAmount(currency=c, amount=money(a.get(c), c), weighted_amount=money(w.get(c), c))
                    for c in a.currencies()
                ],
            )
        )
    return out


async def snapshot_rows(
    session: AsyncSession,
    ctx: Context,
    days: list[date],
    *,
    where: str = "true",
    params: dict[str, Any] | None = None,
) -> tuple[set[date], dict[date, list[Any]]]:
    """The days among `days` that have a complete snapshot, and their rows (day -> (group, stage,
    currency, owner, count, amount, weighted)), filtered by pipeline and currency and `where` on `ps`."""
    extra = dict(params or {})
    conditions = [where]
    if ctx.query.pipeline_id is not None:
        conditions.append("ps.pipeline_id = :pipeline_id")
        extra["pipeline_id"] = ctx.query.pipeline_id
    if ctx.query.currency is not None:
        conditions.append("ps.currency = :currency")
        extra["currency"] = ctx.query.currency
    org = {"org_id": ctx.principal.org_id, "days": days}
    have = {
        r[0]
        for r in await fetch(
            session, "SELECT day FROM pipeline_snapshot_days WHERE org_id = :org_id AND day = ANY(:days)", org
        )
    }
    out: dict[date, list[Any]] = defaultdict(list)
    if have:
        rows = await fetch(
            session,
            f"""
            SELECT ps.day, NULL::text, ps.stage_id, ps.currency, NULL::uuid, sum(ps.count), sum(ps.amount),
                   sum(ps.weighted_amount)
            FROM pipeline_snapshots ps
            WHERE ps.org_id = :org_id AND ps.day = ANY(:days) AND {" AND ".join(conditions)}
            GROUP BY 1, 2, 3, 4""",
            {**extra, "org_id": ctx.principal.org_id, "days": sorted(have)},
        )
        for row in rows:
            out[row[0]].append(row[1:])
    return have, out


async def pipeline(
    session: AsyncSession, principal: Principal, query: MetricQuery
) -> MetricReport[PipelineRow]:
    """Open deals per stage, now or as of the end of local day `as_of`: count, amount, weighted amount.

    As of today or later is now (no history lies ahead). A past day is read from its daily snapshot
    when one is complete and nothing asks for the current owner (owner, team, source or grouping
    filters, or a rep's or manager's visibility); otherwise it is reconstructed from history. Both
    give the same numbers (tests/workers/test_pipeline_snapshots.py).
    """
    ctx = await context(session, principal, query, group_by=GROUPS)
    as_of = query.as_of if query.as_of is not None and query.as_of < ctx.period.today else None
    sql = deal_sql(principal, query, currency_column=None if as_of else "d.currency")
    if as_of is not None and query.currency is not None:
        sql.params["currency"] = query.currency
    group = group_expr(query.group_by, anchor="d.created_at", owner="d.owner_id", source="sl.source")
    rows: list[Any] | None = None
    current_owner_needed = (
        query.owner_id or query.team_id or query.source or query.group_by or principal.role not in ALL_SEEING
    )
    if as_of is not None and not current_owner_needed:
        have, by_day = await snapshot_rows(session, ctx, [as_of])
        if as_of in have:
            rows = by_day.get(as_of, [])
    if rows is None:
        at = end_of_day(as_of, ctx.tz) if as_of is not None else None
        rows = await open_rows(session, ctx, at=at, group=group, sql=sql)
    day = query.as_of or ctx.period.today
    report = envelope(ctx, "pipeline")
    report["period"] = None
    report["as_of"] = query.as_of
    out = build_rows(ctx, rows, day=min(day, ctx.period.today))
    report["rates_used"] = ctx.converter.rates_used() if ctx.converter else []
    return MetricReport[PipelineRow].model_validate({**report, "rows": out})
