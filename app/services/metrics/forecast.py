"""Forecast: open deals by expected close month and forecast category, and won against targets."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.common import Role
from app.models.metric_reports import Attainment, ForecastAmount, ForecastReport, ForecastRow
from app.security import Principal
from app.services import targets as targets_service
from app.services.metrics.common import MetricQuery, fetch, money, ratio, rollup_sql
from app.services.metrics.context import context, envelope
from app.services.metrics.conversion import Money

CATEGORIES = ("commit", "best_case", "pipeline")


async def forecast(session: AsyncSession, principal: Principal, query: MetricQuery) -> ForecastReport:
    """Open deals now by expected close month (and category); won in the period against targets."""
    ctx = await context(session, principal, query)
    sql = rollup_sql(principal, query)
    params = {**ctx.base_params(), **sql.params}
    rows = await fetch(
        session,
        f"""
        SELECT COALESCE(r.close_month, 'none'), s.forecast_category, r.currency,
               sum(r.n), sum(r.amount), sum(r.weighted)
        FROM deal_open_rollup r JOIN stages s ON s.org_id = r.org_id AND s.id = r.stage_id
        {sql.join_sql}
        WHERE {sql.where_sql}
        GROUP BY 1, 2, 3
        HAVING sum(r.n) <> 0""",
        params,
    )
    today = ctx.period.today
    counts: dict[str, int] = defaultdict(int)
    total: dict[str, Money] = {}
    weighted: dict[str, Money] = {}
    by_category: dict[tuple[str, str], Money] = {}
    for month, category, currency, count, amount, weight in rows:
        counts[month] += count
        total.setdefault(month, ctx.new_money()).add(amount, currency, today)
        weighted.setdefault(month, ctx.new_money()).add(weight, currency, today)
        by_category.setdefault((month, category), ctx.new_money()).add(amount, currency, today)
    out = []
    for month in sorted(counts, key=lambda m: (m == "none", m)):
        amounts = []
        for currency in total[month].currencies():
            cat = {
                c: money(by_category.get((month, c), ctx.new_money()).get(currency), currency)
                for c in CATEGORIES
            }
            amounts.append(
                ForecastAmount(
                    currency=currency,
                    amount=money(total[month].get(currency), currency),
                    weighted_amount=money(weighted[month].get(currency), currency),
                    commit_amount=cat["commit"],
                    best_case_amount=cat["best_case"],
                    pipeline_amount=cat["pipeline"],
                )
            )
        out.append(ForecastRow(month=month, count=counts[month], amounts=amounts))

    conv_day = "r.day" if ctx.converter is not None else "NULL::date"
    won_rows = await fetch(
        session,
        f"""
        SELECT r.currency, {conv_day}, sum(r.amount)
        FROM deal_closed_rollup r {sql.join_sql}
        WHERE {sql.where_sql} AND r.status = 'won' AND r.day >= :d0 AND r.day < :d1
        GROUP BY 1, 2""",
        params,
    )
    won = ctx.new_money()
    for currency, day, amount in won_rows:
        won.add(amount, currency, day)
    target = await _target(session, principal, query, ctx.period.start, ctx.period.end)
    attainment = [
        Attainment(
            currency=c,
            won_amount=money(won.get(c), c),
            target_amount=money(target[c], c) if c in target else None,
            attainment=ratio(won.get(c), target.get(c)),
        )
        for c in sorted(set(won.currencies()) | set(target))
    ]
    report: dict[str, Any] = envelope(ctx, "forecast")
    report["rates_used"] = ctx.converter.rates_used() if ctx.converter else []
    return ForecastReport.model_validate({**report, "rows": out, "attainment": attainment})


async def _target(
    session: AsyncSession, principal: Principal, query: MetricQuery, start: Any, end: Any
) -> dict[str, Decimal]:
    """The target of the filter's scope (owner, team, else the caller's visibility or the organisation)."""
    targets = await targets_service.targets_within(session, principal.org_id, start, end)
    user_id = query.owner_id
    team_id = query.team_id
    if user_id is None and team_id is None:
        if principal.role == Role.rep:
            user_id = principal.user_id
        elif principal.role == Role.manager:
            team_id = principal.team_id
    members: set[uuid.UUID] = set()
    if team_id is not None:
        rows = await fetch(
            session,
            "SELECT id FROM users WHERE org_id = :org_id AND team_id = :team_id",
            {"org_id": principal.org_id, "team_id": team_id},
        )
        members = {r[0] for r in rows}
    return targets_service.scope_target(targets, user_id=user_id, team_id=team_id, members=members)
