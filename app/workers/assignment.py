"""Assignment jobs: assign a new lead (its own queue), the contact-SLA sweep, 线索回收."""

from __future__ import annotations

import uuid
from typing import Any

from app.errors import NotFound
from app.services.assignment import engine, recycling, sla
from app.workers.jobs import job_session, load_event


async def assign_lead(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> str:
    """Run the rules for a `lead.created` event; the decision's trigger key makes a re-run a no-op."""
    event = await load_event(ctx, outbox_id, org_id)
    if event is None:
        return "gone"
    try:
        async with job_session(ctx, event.org_id) as session:
            decision = await engine.assign_created_lead(
                session,
                lead_id=uuid.UUID(str(event.payload["lead_id"])),
                trigger_key=f"lead.created:{outbox_id}",
            )
    except NotFound:
        return "lead gone"
    return decision.outcome


async def sla_sweep(ctx: dict[str, Any]) -> int:
    """Leads not contacted within their rule's SLA go to the next rep (or the team manager)."""
    async with job_session(ctx, None) as session:
        due = await sla.due_decisions(session)
    handled = 0
    for decision_id, org_id in due:
        async with job_session(ctx, org_id) as session:
            if await sla.handle_missed(session, decision_id=decision_id):
                handled += 1
    return handled


async def recycle_sweep(ctx: dict[str, Any]) -> int:
    """线索回收 for every organisation that turned it on; safe on several workers (once-only keys)."""
    async with job_session(ctx, None) as session:
        orgs = await recycling.organisations_recycling(session)
    total = 0
    for org_id, after, warn in orgs:
        async with job_session(ctx, org_id) as session:
            warned, recycled = await recycling.sweep_organisation(
                session, recycle_after=after, warn_before=warn
            )
        total += warned + recycled
    return total
