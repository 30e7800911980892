"""Follow-up jobs: schedule the next task after an assignment, first contact or completed task;
flag overdue tasks once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.errors import NotFound
from app.services import followups
from app.workers.jobs import job_session, load_event, load_events


def _id(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value else None


async def schedule_followup(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> str:
    """Create the next follow-up task of the event's lead (else deal) if a policy asks for one."""
    event = await load_event(ctx, outbox_id, org_id)
    if event is None:
        return "nothing to do"
    lead_id, deal_id = _id(event.payload.get("lead_id")), _id(event.payload.get("deal_id"))
    if lead_id is None and deal_id is None:
        return "nothing to do"
    try:
        async with job_session(ctx, event.org_id) as session:
            task = await followups.schedule_after(
                session, lead_id=lead_id, deal_id=deal_id, since=event.created_at
            )
    except NotFound:
        return "lead gone" if lead_id else "deal gone"
    return f"task {task.id}" if task else "no task needed"


async def schedule_followups(ctx: dict[str, Any], outbox_ids: list[str], org_id: str) -> str:
    """`schedule_followup` for a batch of one organisation's events (the relay sends each
    dispatched batch as one job): the leads' events in one transaction (`schedule_after_leads`),
    each deal's event in its own, as its own job would."""
    leads: list[tuple[uuid.UUID, datetime]] = []
    deals: list[tuple[uuid.UUID, datetime]] = []
    for event in await load_events(ctx, outbox_ids, org_id):
        lead_id, deal_id = _id(event.payload.get("lead_id")), _id(event.payload.get("deal_id"))
        if lead_id is not None:
            leads.append((lead_id, event.created_at))
        elif deal_id is not None:
            deals.append((deal_id, event.created_at))
    done = 0
    if leads:
        async with job_session(ctx, uuid.UUID(org_id)) as session:
            done += await followups.schedule_after_leads(session, leads)
    for deal_id, since in deals:
        try:
            async with job_session(ctx, uuid.UUID(org_id)) as session:
                task = await followups.schedule_after(session, lead_id=None, deal_id=deal_id, since=since)
        except NotFound:
            continue
        done += task is not None
    return f"{done} tasks"


async def overdue_sweep(ctx: dict[str, Any]) -> int:
    """Emit task.overdue once per overdue task (safe on several workers: rows are claimed)."""
    async with job_session(ctx, None) as session:
        return await followups.flag_overdue(session)
