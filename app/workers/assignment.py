"""Assignment jobs: assign a new lead (its own queue), and the contact-SLA sweep."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from arq import Retry
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlmodel import col

from app.models.assignment import AssignmentDecision, AssignmentRule
from app.models.base import utcnow
from app.models.lead import Lead
from app.services.assignment import engine as assignment
from app.services.assignment import recycling
from app.state import AppState
from app.workers.jobs import load_event

log = structlog.get_logger("loudou.assignment")


# The job's own timeout (5 s) is final in arq: stop earlier and ask for a retry instead.
INNER_DEADLINE_SECONDS = 3.0
MAX_TRIES = 5
# Leads older than this without any decision are assigned by the sweep (their job was lost or
# gave up); younger ones are left to their job.
SWEEP_AFTER = timedelta(seconds=60)
SWEEP_WINDOW = timedelta(hours=6)


async def assign_lead(ctx: dict[str, Any], outbox_id: str) -> str:
    """Run the rules for a `lead.created` event; a re-run (or the sweep) changes nothing more.

    Bounded by an inner deadline: a slow database turns into arq Retry with backoff rather than
    the job's final timeout; after MAX_TRIES the sweep takes the lead."""
    state: AppState = ctx["state"]
    event = await load_event(state, outbox_id)
    if event is None:
        return "gone"
    lead_id = uuid.UUID(str(event.payload["lead_id"]))
    try:
        async with asyncio.timeout(INNER_DEADLINE_SECONDS):
            return await assign_once(state, event.org_id, lead_id)
    except (TimeoutError, DBAPIError) as exc:
        tries = int(ctx.get("job_try", 1))
        log.warning("assignment.retry", lead_id=str(lead_id), tries=tries, error=type(exc).__name__)
        if tries >= MAX_TRIES:
            return "left for the sweep"
        raise Retry(defer=min(0.5 * 2**tries, 30)) from exc


async def assign_once(state: AppState, org_id: uuid.UUID, lead_id: uuid.UUID) -> str:
    """Assign a new lead unless some `lead.created` decision exists for it already (one transaction)."""
    async with state.sessions() as session:
        session.info["org_id"] = org_id
        lead = (
            await session.execute(select(Lead).where(col(Lead.id) == lead_id).with_for_update())
        ).scalar_one_or_none()
        if lead is None:
            return "lead gone"
        earlier = (
            await session.execute(
                select(col(AssignmentDecision.outcome))
                .where(
                    col(AssignmentDecision.lead_id) == lead_id,
                    col(AssignmentDecision.trigger) == "lead.created",
                )
                .limit(1)
            )
        ).scalar_one_or_none()
        if earlier is not None:
            return str(earlier)
        decision = await assignment.assign(
            session, lead, trigger="lead.created", trigger_key=f"lead.created:{lead_id}"
        )
        await session.commit()
    return decision.outcome


async def unassigned_sweep(ctx: dict[str, Any]) -> int:
    """Assign the leads whose `lead.created` job never decided (lost, or out of tries)."""
    state: AppState = ctx["state"]
    now = utcnow()
    async with state.sessions() as session:
        stuck = list(
            (
                await session.execute(
                    select(col(Lead.org_id), col(Lead.id))
                    .where(
                        col(Lead.created_at) >= now - SWEEP_WINDOW,
                        col(Lead.created_at) < now - SWEEP_AFTER,
                        col(Lead.pooled).is_(True),
                        col(Lead.owner_id).is_(None),
                        col(Lead.deleted_at).is_(None),
                        col(Lead.duplicate_of).is_(None),
                        ~select(col(AssignmentDecision.id))
                        .where(col(AssignmentDecision.lead_id) == col(Lead.id))
                        .exists(),
                    )
                    .order_by(col(Lead.created_at))
                    .limit(200)
                    .execution_options(cross_tenant=True)
                )
            ).all()
        )
    done = 0
    for org_id, lead_id in stuck:
        try:
            async with asyncio.timeout(INNER_DEADLINE_SECONDS):
                await assign_once(state, org_id, lead_id)
            done += 1
        except (TimeoutError, DBAPIError):
            log.warning("assignment.sweep_failed", lead_id=str(lead_id))
    if done:
        log.info("assignment.swept", leads=done)
    return done


async def sla_sweep(ctx: dict[str, Any]) -> int:
    """Leads not contacted within their rule's SLA go to the next rep (or the team manager)."""
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        due = list((await session.execute(sla_due_stmt(utcnow()))).all())
    handled = 0
    for decision_id, org_id in due:
        async with state.sessions() as session:
            session.info["org_id"] = org_id
            if await _handle_sla(session, decision_id):
                handled += 1
            await session.commit()
    return handled


def sla_due_stmt(now: datetime, limit: int = 200) -> Any:
    """Decisions whose contact SLA has passed and is not handled yet (ix_assignment_decisions_sla_pending)."""
    return (
        select(col(AssignmentDecision.id), col(AssignmentDecision.org_id))
        .where(
            col(AssignmentDecision.sla_due_at) <= now,
            col(AssignmentDecision.sla_handled_at).is_(None),
        )
        .order_by(col(AssignmentDecision.sla_due_at))
        .limit(limit)
        .execution_options(cross_tenant=True)
    )


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
        or lead.deleted_at is not None
        or lead.status not in ("new", "working", "qualified")
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
