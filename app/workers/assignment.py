"""Assignment jobs: assign a new lead (its own queue), and the contact-SLA sweep."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import select
from sqlmodel import col

from app.models.assignment import AssignmentDecision, AssignmentRule
from app.models.base import utcnow
from app.models.lead import Lead
from app.services.assignment import engine as assignment
from app.services.assignment import recycling
from app.state import AppState
from app.workers.jobs import load_event

log = structlog.get_logger("loudou.assignment")


async def assign_lead(ctx: dict[str, Any], outbox_id: str) -> str:
    """Run the rules for a `lead.created` event; the decision's trigger key makes a re-run a no-op."""
    state: AppState = ctx["state"]
    event = await load_event(state, outbox_id)
    if event is None:
        return "gone"
    async with state.sessions() as session:
        session.info["org_id"] = event.org_id
        lead = (
            await session.execute(
                select(Lead).where(col(Lead.id) == uuid.UUID(str(event.payload["lead_id"]))).with_for_update()
            )
        ).scalar_one_or_none()
        if lead is None:
            return "lead gone"
        decision = await assignment.assign(
            session, lead, trigger="lead.created", trigger_key=f"lead.created:{outbox_id}"
        )
        await session.commit()
    return decision.outcome


async def sla_sweep(ctx: dict[str, Any]) -> int:
    """Leads not contacted within their rule's SLA go to the next rep (or the team manager)."""
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        due = list(
            (
                await session.execute(
                    select(col(AssignmentDecision.id), col(AssignmentDecision.org_id))
                    .where(
                        col(AssignmentDecision.sla_due_at) <= utcnow(),
                        col(AssignmentDecision.sla_handled_at).is_(None),
                    )
                    .order_by(col(AssignmentDecision.sla_due_at))
                    .limit(200)
                    .execution_options(cross_tenant=True)
                )
            ).all()
        )
    handled = 0
    for decision_id, org_id in due:
        async with state.sessions() as session:
            session.info["org_id"] = org_id
            if await _handle_sla(session, decision_id):
                handled += 1
            await session.commit()
    return handled


async def _handle_sla(session: Any, decision_id: uuid.UUID) -> bool:
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
    lead = (
        await session.execute(select(Lead).where(col(Lead.id) == decision.lead_id).with_for_update())
    ).scalar_one_or_none()
    if (
        lead is None
        or lead.owner_id != decision.chosen_user_id
        or lead.first_contacted_at is not None
        or not lead.is_open
    ):
        return False  # contacted in time, or moved on: nothing to do
    rule = await session.get(AssignmentRule, decision.rule_id) if decision.rule_id else None
    if rule is not None and rule.sla_action == "escalate":
        await assignment.escalate(session, lead, rule=rule, trigger_key=f"sla:{decision.id}")
    else:
        await assignment.assign(
            session,
            lead,
            trigger="sla",
            trigger_key=f"sla:{decision.id}",
            exclude=frozenset({lead.owner_id}) if lead.owner_id else frozenset(),
            only_rule=decision.rule_id,
        )
    log.info("assignment.sla_missed", lead_id=str(lead.id), decision_id=str(decision.id))
    return True


async def recycle_sweep(ctx: dict[str, Any]) -> int:
    """线索回收 for every organisation that turned it on; safe on several workers (once-only keys)."""
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        orgs = await recycling.organisations_recycling(session)
    total = 0
    for org_id, after, warn in orgs:
        async with state.sessions() as session:
            session.info["org_id"] = org_id
            warned, recycled = await recycling.sweep_organisation(
                session, recycle_after=after, warn_before=warn
            )
            await session.commit()
        total += warned + recycled
    return total
