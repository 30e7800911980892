"""Contact SLA: a lead not contacted in time after a rule assigned it goes to the next rep of the
rule (or, with `sla_action="escalate"`, to the team manager). Each decision is handled once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.assignment import AssignmentDecision, AssignmentRule
from app.models.base import utcnow
from app.models.lead import Lead
from app.services.assignment import engine

log = structlog.get_logger("loudou.assignment")


async def due_decisions(session: AsyncSession, *, limit: int = 200) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(decision id, org id) of assignments whose contact SLA has passed unhandled, any organisation."""
    rows = await session.execute(due_stmt(utcnow(), limit=limit))
    return [(row[0], row[1]) for row in rows]


def due_stmt(now: datetime, *, limit: int = 200) -> Any:
    """The statement of due_decisions (read through ix_assignment_decisions_sla_pending)."""
    return (
        select(col(AssignmentDecision.id), col(AssignmentDecision.org_id))
        .where(col(AssignmentDecision.sla_due_at) <= now, col(AssignmentDecision.sla_handled_at).is_(None))
        .order_by(col(AssignmentDecision.sla_due_at))
        .limit(limit)
        .execution_options(cross_tenant=True)
    )


async def handle_missed(session: AsyncSession, *, decision_id: uuid.UUID) -> bool:
    """Reassign or escalate the lead of one missed SLA; False when another worker has the decision,
    or the lead was contacted, changed hands or closed meanwhile (the decision is then handled)."""
    decision = (
        await session.execute(
            select(AssignmentDecision)
            .where(
                col(AssignmentDecision.id) == decision_id, col(AssignmentDecision.sla_handled_at).is_(None)
            )
            .with_for_update(skip_locked=True)
        )
    ).scalar_one_or_none()
    if decision is None:
        return False  # another worker has it
    decision.sla_handled_at = utcnow()
    lead = await session.get(Lead, decision.lead_id, with_for_update=True)
    if (
        lead is None
        or lead.owner_id != decision.chosen_user_id
        or lead.first_contacted_at is not None
        or not lead.is_open
    ):
        return False  # contacted in time, or moved on: nothing to do
    rule = await session.get(AssignmentRule, decision.rule_id) if decision.rule_id else None
    if rule is not None and rule.sla_action == "escalate":
        await engine.escalate(session, lead, rule=rule, trigger_key=f"sla:{decision.id}")
    else:
        await engine.assign(
            session,
            lead,
            trigger="sla",
            trigger_key=f"sla:{decision.id}",
            exclude=frozenset({lead.owner_id}) if lead.owner_id else frozenset(),
            only_rule=decision.rule_id,
        )
    log.info("assignment.sla_missed", lead_id=str(lead.id), decision_id=str(decision.id))
    return True
