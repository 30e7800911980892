"""Follow-up jobs: schedule the next task after an assignment, first contact or completed task;
flag overdue tasks once."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from app.models.deal import Deal
from app.models.lead import Lead
from app.models.outbox import OutboxEvent
from app.services import followups
from app.state import AppState
from app.workers.jobs import load_event


async def schedule_followup(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> str:
    """Create the lead's next follow-up task if its status has a policy and none is open."""
    state: AppState = ctx["state"]
    event = await load_event(state, outbox_id, org_id)
    if event is None:
        return "nothing to do"
    if not event.payload.get("lead_id"):
        return await _schedule_for_deal(state, event)
    async with state.sessions() as session:
        session.info["org_id"] = event.org_id
        lead = (
            await session.execute(
                select(Lead).where(col(Lead.id) == uuid.UUID(str(event.payload["lead_id"]))).with_for_update()
            )
        ).scalar_one_or_none()
        if lead is None:
            return "lead gone"
        task = await followups.schedule_next(session, lead, since=event.created_at)
        await session.commit()
    return f"task {task.id}" if task else "no task needed"


async def _schedule_for_deal(state: AppState, event: OutboxEvent) -> str:
    deal_id = event.payload.get("deal_id")
    if not deal_id:
        return "nothing to do"
    async with state.sessions() as session:
        session.info["org_id"] = event.org_id
        deal = (
            await session.execute(
                select(Deal).where(col(Deal.id) == uuid.UUID(str(deal_id))).with_for_update()
            )
        ).scalar_one_or_none()
        if deal is None:
            return "deal gone"
        task = await followups.schedule_next_for_deal(session, deal, since=event.created_at)
        await session.commit()
    return f"task {task.id}" if task else "no task needed"


async def overdue_sweep(ctx: dict[str, Any]) -> int:
    """Emit task.overdue once per overdue task (safe on several workers: rows are claimed)."""
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        flagged = await followups.flag_overdue(session)
        await session.commit()
    return flagged
