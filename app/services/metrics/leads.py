"""The lead funnel (cohort): created -> contacted -> qualified -> converted -> won, and speed to lead."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.metric_reports import LeadFunnelRow, MetricReport
from app.security import Principal
from app.services.metrics.common import GroupBy, MetricQuery, fetch, group_expr, lead_sql, minutes, ratio
from app.services.metrics.context import context, envelope

GROUPS = (GroupBy.source, GroupBy.intake_source, GroupBy.owner, GroupBy.team, GroupBy.month, GroupBy.week)
# Counted leads: not a merged duplicate, not deleted (lead_sql adds both conditions).
CONTACTED = "le.first_contacted_at IS NOT NULL"
SPEED = "EXTRACT(EPOCH FROM le.first_contacted_at - le.created_at)"
# The cohort: lead_funnel_facts (one trigger-kept narrow row per lead: the lead's columns and whether
# its converted deal is won), or the leads joined to their deals; tests switch USE_FACTS_TABLE off.
USE_FACTS_TABLE = True
FROM_FACTS = "FROM lead_funnel_facts le", "le.won"
FROM_LEADS = (
    "FROM leads le LEFT JOIN deals cd ON cd.org_id = le.org_id AND cd.id = le.converted_deal_id",
    "cd.status = 'won'",
)


async def lead_funnel(
    session: AsyncSession, principal: Principal, query: MetricQuery
) -> MetricReport[LeadFunnelRow]:
    """Leads created in the period by step, with rates against created and the previous step."""
    ctx = await context(session, principal, query, group_by=GROUPS, convertible=False)
    sql = lead_sql(principal, query)
    group = group_expr(
        query.group_by,
        anchor="le.created_at",
        owner="le.owner_id",
        source="le.source",
        intake_source="le.source_id",
    )
    source, won = FROM_FACTS if USE_FACTS_TABLE else FROM_LEADS
    rows = await fetch(
        session,
        f"""
        SELECT {group}, count(*),
               count(*) FILTER (WHERE le.first_contacted_at IS NOT NULL),
               count(*) FILTER (WHERE le.status IN ('qualified', 'converted')),
               count(*) FILTER (WHERE le.converted_deal_id IS NOT NULL),
               count(*) FILTER (WHERE {won}),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {SPEED}) FILTER (WHERE {CONTACTED}),
               percentile_cont(0.9) WITHIN GROUP (ORDER BY {SPEED}) FILTER (WHERE {CONTACTED})
        {source}
        {sql.join_sql}
        WHERE {sql.where_sql} AND le.created_at >= :t0 AND le.created_at < :t1
        GROUP BY 1""",
        {**ctx.base_params(), **sql.params},
    )
    out = []
    for grp, created, contacted, qualified, converted, won, median, p90 in sorted(
        rows, key=lambda r: (r[0] is None, r[0] or "")
    ):
        out.append(
            LeadFunnelRow(
                group=grp,
                created=created,
                contacted=contacted,
                qualified=qualified,
                converted=converted,
                won=won,
                contacted_rate=ratio(contacted, created),
                qualified_rate=ratio(qualified, created),
                converted_rate=ratio(converted, created),
                won_rate=ratio(won, created),
                qualified_step_rate=ratio(qualified, contacted),
                converted_step_rate=ratio(converted, qualified),
                won_step_rate=ratio(won, converted),
                speed_to_lead_median_minutes=minutes(median),
                speed_to_lead_p90_minutes=minutes(p90),
            )
        )
    return MetricReport[LeadFunnelRow].model_validate({**envelope(ctx, "lead_funnel"), "rows": out})
