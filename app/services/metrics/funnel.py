"""The cohort stage funnel (DESIGN.md §7 "Stage funnel")."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.common import Role
from app.models.metric_reports import FunnelAmount, FunnelRow, MetricReport
from app.security import Principal
from app.services.metrics.common import (
    GroupBy,
    MetricQuery,
    complement,
    deal_sql,
    fetch,
    group_expr,
    money,
    ratio,
    rollup_group,
)
from app.services.metrics.context import context, envelope
from app.services.metrics.conversion import Money

GROUPS = (GroupBy.owner, GroupBy.team, GroupBy.source, GroupBy.month, GroupBy.week)
# The cohort's reach and last open stage: from deal_funnel_facts (one trigger-kept row per deal),
# or from the deals joined to their stage history; tests switch USE_FACTS_TABLE off to compare.
USE_FACTS_TABLE = True


async def funnel(session: AsyncSession, principal: Principal, query: MetricQuery) -> MetricReport[FunnelRow]:
    """Per stage of one pipeline (open stages, then won): reached, conversions, drop-off, lost here."""
    ctx = await context(session, principal, query, group_by=GROUPS)
    pipeline_id = query.pipeline_id or ctx.default_pipeline_id()
    stages = [s for s in ctx.ordered_stages(pipeline_id) if s.live]
    open_stages = [s for s in stages if s.kind == "open"]
    won_stage = next((s for s in stages if s.kind == "won"), None)
    report: dict[str, Any] = envelope(ctx, "funnel")
    if pipeline_id is None or won_stage is None or not open_stages:
        return MetricReport[FunnelRow].model_validate({**report, "rows": []})

    sql = deal_sql(principal, query)
    group = group_expr(query.group_by, anchor="d.created_at", owner="d.owner_id", source="sl.source")
    params = {
        **ctx.base_params(),
        **sql.params,
        "funnel_pipeline": pipeline_id,
        "open_ids": [s.id for s in open_stages],
    }
    by_day = (
        ctx.converter is None
        and not sql.joins
        and query.owner_id is None
        and principal.role in (Role.admin, Role.viewer)
        and query.group_by in (None, GroupBy.month, GroupBy.week)
    )
    if USE_FACTS_TABLE and by_day:
        rows = await _from_days(session, query, params, open_stages)
    elif USE_FACTS_TABLE:
        rows = await _from_facts(session, ctx, sql, group, params, open_stages)
    else:
        rows = await _from_history(session, ctx, sql, group, params)
    by_group: dict[str | None, list[Any]] = defaultdict(list)
    for row in rows:
        by_group[row[0]].append(row)
    out: list[FunnelRow] = []
    for grp in sorted(by_group, key=lambda g: (g is None, g or "")):
        out.extend(_group_rows(ctx.new_money, grp, by_group[grp], open_stages, won_stage))
    return MetricReport[FunnelRow].model_validate({**report, "rows": out})


async def _from_days(
    session: AsyncSession, query: MetricQuery, params: dict[str, Any], open_stages: list[Any]
) -> list[Any]:
    """The same rows from deal_funnel_days (local creation days: the period [d0, d1) is the same
    instants as [t0, t1)), when nothing needs a deal's owner, lead or conversion day."""
    currency = "AND r.currency = :currency" if query.currency is not None else ""
    rows = await fetch(
        session,
        f"""
        SELECT {rollup_group(query.group_by)}, r.status, r.currency, NULL::date, r.reached, r.last_open,
               sum(r.n), sum(r.amount)
        FROM deal_funnel_days r
        WHERE r.org_id = :org_id AND r.pipeline_id = :funnel_pipeline
          AND r.day >= :d0 AND r.day < :d1 {currency}
        GROUP BY 1, 2, 3, 4, 5, 6
        HAVING sum(r.n) <> 0""",
        params,
    )
    return _by_top_stage(rows, open_stages)


async def _from_facts(
    session: AsyncSession, ctx: Any, sql: Any, group: str, params: dict[str, Any], open_stages: list[Any]
) -> list[Any]:
    """(grp, status, currency, conv_day, max_pos, last_open, count, amount) from deal_funnel_facts `d`
    (it has the deal columns the filters use), grouped by the set of stages reached; the highest
    open stage reached (1-based, as the history query gives it) is taken here from the stage order."""
    rows = await fetch(
        session,
        f"""
        SELECT {group}, d.status, d.currency, {ctx.conversion_day("d.closed_at")}, d.reached, d.last_open,
               count(*), sum(d.amount)
        FROM deal_funnel_facts d {sql.join_sql}
        WHERE {sql.where_sql} AND d.pipeline_id = :funnel_pipeline
          AND d.created_at >= :t0 AND d.created_at < :t1
        GROUP BY 1, 2, 3, 4, 5, 6""",
        params,
    )
    return _by_top_stage(rows, open_stages)


def _by_top_stage(rows: list[Any], open_stages: list[Any]) -> list[Any]:
    """Rows keyed by the set of stages reached, merged by the highest open stage reached."""
    position = {s.id: i + 1 for i, s in enumerate(open_stages)}
    out: dict[tuple[Any, ...], list[Any]] = {}
    for grp, status, currency, conv_day, reached, last_open, count, amount in rows:
        max_pos = max((position[r] for r in reached if r in position), default=None)
        key = (grp, status, currency, conv_day, max_pos, last_open)
        merged = out.setdefault(key, [0, None])
        merged[0] += count
        if amount is not None:
            merged[1] = amount if merged[1] is None else merged[1] + amount
    return [(*key, count, amount) for key, (count, amount) in out.items()]


async def _from_history(
    session: AsyncSession, ctx: Any, sql: Any, group: str, params: dict[str, Any]
) -> list[Any]:
    """(grp, status, currency, conv_day, max_pos, last_open, count, amount) from the deals and their
    stage history."""
    return await fetch(
        session,
        f"""
        WITH cohort AS (
          SELECT d.id, d.status, d.amount, d.currency, d.stage_id, d.stage_entered_at, {group} AS grp,
                 {ctx.conversion_day("d.closed_at")} AS conv_day
          FROM deals d {sql.join_sql}
          WHERE {sql.where_sql} AND d.pipeline_id = :funnel_pipeline
            AND d.created_at >= :t0 AND d.created_at < :t1
        ), open_stage AS (
          SELECT o.stage_id, o.pos FROM unnest(CAST(:open_ids AS uuid[])) WITH ORDINALITY AS o(stage_id, pos)
        ), reach AS (
          SELECT h.deal_id, max(o.pos) AS max_pos
          FROM deal_stage_history h
          JOIN cohort c ON c.id = h.deal_id
          JOIN open_stage o ON o.stage_id = h.to_stage_id
          WHERE h.org_id = :org_id
          GROUP BY h.deal_id
        ), last_open AS (
          -- A lost deal's last open stage is the one it left for the lost stage: the entry into
          -- its current stage (at stage_entered_at) says where it came from.
          SELECT c.id AS deal_id, h.from_stage_id AS to_stage_id
          FROM cohort c
          JOIN deal_stage_history h
            ON h.org_id = :org_id AND h.deal_id = c.id
           AND h.at = c.stage_entered_at AND h.to_stage_id = c.stage_id
          WHERE c.status = 'lost'
        )
        SELECT c.grp, c.status, c.currency, c.conv_day, r.max_pos, lo.to_stage_id, count(*), sum(c.amount)
        FROM cohort c
        LEFT JOIN reach r ON r.deal_id = c.id
        LEFT JOIN last_open lo ON lo.deal_id = c.id
        GROUP BY 1, 2, 3, 4, 5, 6
        """,
        params,
    )


def _group_rows(
    new_money: Any, grp: str | None, rows: list[Any], open_stages: list[Any], won_stage: Any
) -> list[FunnelRow]:
    n = len(open_stages)
    reached = [0] * (n + 1)  # the open stages, then won
    reached_amount: list[Money] = [new_money() for _ in range(n + 1)]
    lost_here = [0] * n
    lost_amount: list[Money] = [new_money() for _ in range(n)]
    index_of: dict[uuid.UUID, int] = {s.id: i for i, s in enumerate(open_stages)}
    currencies: set[str] = set()
    for _, status, currency, conv_day, max_pos, last_open, count, amount in rows:
        top = n if status == "won" else (max_pos - 1 if max_pos is not None else -1)
        for i in range(top + 1):
            reached[i] += count
            reached_amount[i].add(amount, currency, conv_day)
        if status == "lost" and last_open in index_of:
            i = index_of[last_open]
            lost_here[i] += count
            lost_amount[i].add(amount, currency, conv_day)
        currencies.add(currency)
    money_currencies = sorted({c for m in reached_amount for c in m.currencies()})
    out = []
    stages = [*open_stages, won_stage]
    for i, stage in enumerate(stages):
        cfp = ratio(reached[i], reached[i - 1]) if i > 0 else None
        amounts = []
        for cur in money_currencies:
            here = reached_amount[i].get(cur)
            a_cfp = ratio(here, reached_amount[i - 1].get(cur)) if i > 0 else None
            amounts.append(
                FunnelAmount(
                    currency=cur,
                    reached_amount=money(here, cur),
                    lost_here_amount=money(lost_amount[i].get(cur), cur) if i < n else None,
                    amount_conversion_from_previous=a_cfp,
                    amount_conversion_from_first=ratio(here, reached_amount[0].get(cur)),
                    amount_drop_off=complement(a_cfp),
                )
            )
        out.append(
            FunnelRow(
                group=grp,
                pipeline_id=stage.pipeline_id,
                stage_id=stage.id,
                stage_key=stage.key,
                stage_name=stage.name,
                reached=reached[i],
                conversion_from_previous=cfp,
                conversion_from_first=ratio(reached[i], reached[0]),
                drop_off=complement(cfp),
                lost_here=lost_here[i] if i < n else None,
                amounts=amounts,
            )
        )
    return out


_ = Decimal  # amounts stay Decimal end to end
