"""Win rate, sales cycle with time in stage, and pipeline velocity (DESIGN.md §7)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.metric_reports import CycleRow, MetricReport, StageTime, VelocityRow, WinAmount, WinRateRow
from app.security import Principal
from app.services.metrics import durations
from app.services.metrics.common import (
    EXACT,
    SECONDS_PER_DAY,
    GroupBy,
    MetricQuery,
    Sql,
    days,
    deal_sql,
    end_of_day,
    fetch,
    group_expr,
    money,
    ratio,
    rollup_group,
    rollup_sql,
)
from app.services.metrics.context import context, envelope
from app.services.metrics.conversion import Money
from app.services.metrics.pipeline import open_rows

GROUPS = (GroupBy.owner, GroupBy.team, GroupBy.source, GroupBy.month, GroupBy.week)
CLOSED_IN_PERIOD = "d.closed_at >= :t0 AND d.closed_at < :t1"
# Ended stays: the trigger-kept table, or the same rows computed from the stage history (one
# ordered pass over all of it); tests switch USE_STAYS_TABLE off to compare the two.
USE_STAYS_TABLE = True
# Counts and means from the per-day rollups and exact percentiles from index walks
# (app.services.metrics.durations) when no deal condition is needed; tests switch it off to compare.
FAST_PERCENTILES = True
STAYS = "deal_stage_stays"
STAYS_FROM_HISTORY = """(
  SELECT h.org_id, h.deal_id, h.to_stage_id AS stage_id, h.at AS entered_at, h.left_at
  FROM (SELECT h.*, lead(h.at) OVER (PARTITION BY h.deal_id ORDER BY h.at, h.id) AS left_at
        FROM deal_stage_history h WHERE h.org_id = :org_id) h
  WHERE h.left_at IS NOT NULL)"""


def _sorted_groups(groups: Any) -> list[Any]:
    return sorted(groups, key=lambda g: (g is None, g or ""))


async def win_rate(
    session: AsyncSession, principal: Principal, query: MetricQuery
) -> MetricReport[WinRateRow]:
    """won / (won + lost) among deals whose current closed_at is in the period."""
    ctx = await context(session, principal, query, group_by=GROUPS)
    sql = rollup_sql(principal, query)
    conv_day = "r.day" if ctx.converter is not None else "NULL::date"
    rows = await fetch(
        session,
        f"""
        SELECT {rollup_group(query.group_by)}, r.status, r.currency, {conv_day}, sum(r.n), sum(r.amount)
        FROM deal_closed_rollup r {sql.join_sql}
        WHERE {sql.where_sql} AND r.day >= :d0 AND r.day < :d1
        GROUP BY 1, 2, 3, 4
        HAVING sum(r.n) <> 0""",
        {**ctx.base_params(), **sql.params},
    )
    won: dict[Any, int] = defaultdict(int)
    lost: dict[Any, int] = defaultdict(int)
    won_money: dict[Any, Money] = {}
    lost_money: dict[Any, Money] = {}
    for grp, status, currency, day, count, amount in rows:
        (won if status == "won" else lost)[grp] += count
        won_money.setdefault(grp, ctx.new_money())
        lost_money.setdefault(grp, ctx.new_money())
        (won_money if status == "won" else lost_money)[grp].add(amount, currency, day)
    out = []
    for grp in _sorted_groups(set(won) | set(lost)):
        currencies = sorted(set(won_money[grp].currencies()) | set(lost_money[grp].currencies()))
        out.append(
            WinRateRow(
                group=grp,
                won=won[grp],
                lost=lost[grp],
                win_rate=ratio(won[grp], won[grp] + lost[grp]),
                amounts=[
                    WinAmount(
                        currency=c,
                        won_amount=money(won_money[grp].get(c), c),
                        lost_amount=money(lost_money[grp].get(c), c),
                    )
                    for c in currencies
                ],
            )
        )
    return MetricReport[WinRateRow].model_validate({**envelope(ctx, "win_rate"), "rows": out})


async def cycle(session: AsyncSession, principal: Principal, query: MetricQuery) -> MetricReport[CycleRow]:
    """Days created -> won of the deals won in the period (mean, median, p75), and time in each stage."""
    ctx = await context(session, principal, query, group_by=GROUPS, convertible=False)
    sql = deal_sql(principal, query)
    params = {**ctx.base_params(), **sql.params}
    fast = None
    if USE_STAYS_TABLE and FAST_PERCENTILES and durations.applies(sql, query.group_by):
        fast = await durations.cycle_rows(session, ctx, params)
    if fast is not None:
        won_rows, stay_rows = fast
    else:
        won_rows = await _won_rows(session, query, sql, params)
        stay_rows = await _stay_rows(session, query, sql, params)
    stays: dict[Any, list[StageTime]] = defaultdict(list)
    order = {st.id: i for i, st in enumerate(ctx.ordered_stages())}
    for grp, stage_id, count, mean, median in sorted(stay_rows, key=lambda r: order.get(r[1], 1 << 30)):
        stage = ctx.stages[stage_id]
        stays[grp].append(
            StageTime(
                stage_id=stage_id,
                stage_key=stage.key,
                stays=count,
                stage_mean_days=days(mean),
                stage_median_days=days(median),
            )
        )
    won_by_group = {r[0]: r for r in won_rows}
    out = []
    for grp in _sorted_groups(set(won_by_group) | set(stays)):
        r = won_by_group.get(grp)
        out.append(
            CycleRow(
                group=grp,
                won=r[1] if r else 0,
                mean_days=days(r[2]) if r else None,
                median_days=days(r[3]) if r else None,
                p75_days=days(r[4]) if r else None,
                time_in_stage=stays.get(grp, []),
            )
        )
    return MetricReport[CycleRow].model_validate({**envelope(ctx, "cycle"), "rows": out})


async def _won_rows(session: AsyncSession, query: MetricQuery, sql: Sql, params: dict[str, Any]) -> list[Any]:
    """(group, count, mean, median, p75 seconds) of the deals won in the period, over the deals."""
    group = group_expr(query.group_by, anchor="d.closed_at", owner="d.owner_id", source="sl.source")
    seconds = "EXTRACT(EPOCH FROM d.closed_at - d.created_at)"
    return await fetch(
        session,
        f"""
        SELECT {group}, count(*), avg({seconds}),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {seconds}),
               percentile_cont(0.75) WITHIN GROUP (ORDER BY {seconds})
        FROM deals d {sql.join_sql}
        WHERE {sql.where_sql} AND d.status = 'won' AND {CLOSED_IN_PERIOD}
        GROUP BY 1""",
        params,
    )


async def _stay_rows(
    session: AsyncSession, query: MetricQuery, sql: Sql, params: dict[str, Any]
) -> list[Any]:
    """(group, stage_id, count, mean, median seconds) of the stays that ended in the period."""
    stay_group = group_expr(query.group_by, anchor="s.left_at", owner="d.owner_id", source="sl.source")
    # Ended stays are kept in deal_stage_stays (the stage history's lead(at), trigger-kept): read by
    # left_at; the deals are joined only when a filter, the caller's visibility or the group needs them.
    needs_deal = (
        len(sql.where) > 1 or bool(sql.joins) or query.group_by not in (None, GroupBy.month, GroupBy.week)
    )
    deal_join = (
        f"JOIN deals d ON d.org_id = s.org_id AND d.id = s.deal_id {sql.join_sql}" if needs_deal else ""
    )
    return await fetch(
        session,
        f"""
        SELECT {stay_group}, s.stage_id, count(*),
               avg(EXTRACT(EPOCH FROM s.left_at - s.entered_at)),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM s.left_at - s.entered_at))
        FROM {STAYS if USE_STAYS_TABLE else STAYS_FROM_HISTORY} s
        {deal_join}
        WHERE s.org_id = :org_id AND s.left_at >= :t0 AND s.left_at < :t1
          AND {sql.where_sql if needs_deal else "true"}
        GROUP BY 1, 2""",
        params,
    )


async def velocity(
    session: AsyncSession, principal: Principal, query: MetricQuery
) -> MetricReport[VelocityRow]:
    """Per currency: open deals as of the last day × win rate × mean won amount / mean cycle days."""
    ctx = await context(
        session, principal, query, group_by=(GroupBy.owner, GroupBy.team, GroupBy.source), convertible=False
    )
    sql = deal_sql(principal, query)
    group = group_expr(query.group_by, anchor="d.closed_at", owner="d.owner_id", source="sl.source")
    closed_sql = rollup_sql(principal, query)
    closed = await fetch(
        session,
        f"""
        SELECT {rollup_group(query.group_by)}, r.currency,
               COALESCE(sum(r.n) FILTER (WHERE r.status = 'won'), 0),
               COALESCE(sum(r.n) FILTER (WHERE r.status = 'lost'), 0),
               sum(r.amount) FILTER (WHERE r.status = 'won'),
               COALESCE(sum(r.amount_n) FILTER (WHERE r.status = 'won'), 0),
               sum(r.cycle_seconds) FILTER (WHERE r.status = 'won')
        FROM deal_closed_rollup r {closed_sql.join_sql}
        WHERE {closed_sql.where_sql} AND r.day >= :d0 AND r.day < :d1
        GROUP BY 1, 2
        HAVING sum(r.n) <> 0""",
        {**ctx.base_params(), **closed_sql.params},
    )
    last_day = ctx.period.end - timedelta(days=1)
    at = end_of_day(last_day, ctx.tz)
    as_of_sql = deal_sql(principal, query, currency_column=None)
    if query.currency is not None:
        as_of_sql.params["currency"] = query.currency
    open_deals = await open_rows(
        session,
        ctx,
        at=None if last_day >= ctx.period.today else at,
        group=group,
        sql=sql if last_day >= ctx.period.today else as_of_sql,
    )
    open_count: dict[tuple[Any, str], int] = defaultdict(int)
    for grp, _, currency, _, count, _, _ in open_deals:
        open_count[(grp, currency)] += count
    facts = {(r[0], r[1]): r for r in closed}
    out = []
    for grp, currency in sorted(set(facts) | set(open_count), key=lambda k: (k[0] is None, k[0] or "", k[1])):
        _, _, won, lost, won_sum, won_with_amount, cycle_seconds = facts.get(
            (grp, currency), (grp, currency, 0, 0, None, 0, None)
        )
        n_open = open_count.get((grp, currency), 0)
        mean_amount = EXACT.divide(Decimal(won_sum), Decimal(won_with_amount)) if won_with_amount else None
        mean_days = (
            EXACT.divide(EXACT.divide(Decimal(cycle_seconds), Decimal(won)), SECONDS_PER_DAY) if won else None
        )
        value = None
        if won + lost and mean_amount is not None and mean_days:
            value = money(
                EXACT.divide(
                    EXACT.multiply(
                        EXACT.multiply(Decimal(n_open), EXACT.divide(Decimal(won), Decimal(won + lost))),
                        mean_amount,
                    ),
                    mean_days,
                ),
                currency,
            )
        out.append(
            VelocityRow(
                group=grp,
                currency=currency,
                open_deals=n_open,
                won=won,
                lost=lost,
                win_rate=ratio(won, won + lost),
                mean_won_amount=money(mean_amount, currency) if mean_amount is not None else None,
                mean_cycle_days=days(EXACT.divide(Decimal(cycle_seconds), Decimal(won))) if won else None,
                velocity_per_day=value,
            )
        )
    return MetricReport[VelocityRow].model_validate({**envelope(ctx, "velocity"), "rows": out})
