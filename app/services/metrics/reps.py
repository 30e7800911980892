"""Rep performance per current owner: leads, won deals and amounts, win rate, target, attainment."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.metric_reports import MetricReport, RepAmount, RepRow
from app.security import Principal
from app.services import targets as targets_service
from app.services.metrics import leads as lead_metrics
from app.services.metrics.common import (
    MetricQuery,
    Sql,
    fetch,
    lead_sql,
    money,
    ratio,
    rollup_sql,
    visibility,
)
from app.services.metrics.context import context, envelope
from app.services.metrics.conversion import Money


async def reps(session: AsyncSession, principal: Principal, query: MetricQuery) -> MetricReport[RepRow]:
    """One row per owner the caller may see (active, or with numbers in the period)."""
    ctx = await context(session, principal, query)
    params = ctx.base_params()
    leads = lead_sql(principal, query)
    lead_rows = await fetch(
        session,
        f"""
        SELECT le.owner_id, count(*), count(le.first_contacted_at), count(le.converted_deal_id)
        FROM {"lead_funnel_facts" if lead_metrics.USE_FACTS_TABLE else "leads"} le {leads.join_sql}
        WHERE {leads.where_sql} AND le.owner_id IS NOT NULL AND le.created_at >= :t0 AND le.created_at < :t1
        GROUP BY 1""",
        {**params, **leads.params},
    )
    deals = rollup_sql(principal, query)
    conv_day = "r.day" if ctx.converter is not None else "NULL::date"
    deal_rows = await fetch(
        session,
        f"""
        SELECT r.owner_id, r.status, r.currency, {conv_day}, sum(r.n), sum(r.amount)
        FROM deal_closed_rollup r {deals.join_sql}
        WHERE {deals.where_sql} AND r.owner_id IS NOT NULL AND r.day >= :d0 AND r.day < :d1
        GROUP BY 1, 2, 3, 4
        HAVING sum(r.n) <> 0""",
        {**params, **deals.params},
    )
    users = Sql(where=["u.org_id = :org_id"], params={"org_id": principal.org_id})
    if query.owner_id is not None:
        users.where.append("u.id = :owner_id")
        users.params["owner_id"] = query.owner_id
    if query.team_id is not None:
        users.where.append("u.team_id = :team_id")
        users.params["team_id"] = query.team_id
    visibility(users, principal, "u.id")
    user_rows = await fetch(
        session,
        "SELECT u.id, COALESCE(NULLIF(u.name, ''), u.email), u.team_id, u.active, u.role "
        f"FROM users u WHERE {users.where_sql}",
        {**params, **users.params},
    )
    lead_facts = {r[0]: r for r in lead_rows}
    won: dict[uuid.UUID, int] = defaultdict(int)
    lost: dict[uuid.UUID, int] = defaultdict(int)
    won_money: dict[uuid.UUID, Money] = defaultdict(ctx.new_money)
    for owner_id, status, currency, day, count, amount in deal_rows:
        if status == "won":
            won[owner_id] += count
            won_money[owner_id].add(amount, currency, day)
        else:
            lost[owner_id] += count
    targets = targets_service.user_targets(
        await targets_service.targets_within(session, principal.org_id, ctx.period.start, ctx.period.end)
    )
    out = []
    for user_id, name, team_id, active, role in sorted(user_rows, key=lambda r: (r[1], str(r[0]))):
        has_numbers = user_id in lead_facts or user_id in won or user_id in lost or user_id in targets
        if not has_numbers and not (active and role in ("rep", "manager")):
            continue
        lf: Any = lead_facts.get(user_id, (user_id, 0, 0, 0))
        target = targets.get(user_id, {})
        currencies = sorted(set(won_money[user_id].currencies()) | set(target))
        out.append(
            RepRow(
                owner_id=user_id,
                owner_name=name,
                team_id=team_id,
                leads_created=lf[1],
                leads_contacted=lf[2],
                leads_converted=lf[3],
                deals_won=won[user_id],
                deals_lost=lost[user_id],
                win_rate=ratio(won[user_id], won[user_id] + lost[user_id]),
                amounts=[
                    RepAmount(
                        currency=c,
                        won_amount=money(won_money[user_id].get(c), c),
                        target_amount=money(target[c], c) if c in target else None,
                        attainment=ratio(won_money[user_id].get(c), target.get(c)),
                    )
                    for c in currencies
                ],
            )
        )
    return MetricReport[RepRow].model_validate({**envelope(ctx, "reps"), "rows": out})
