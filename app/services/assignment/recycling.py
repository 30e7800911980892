"""Lead recycling (线索回收): owned leads nobody followed up return to the pool.

"Followed up" means the latest of: assignment, first contact, or an outbound call, email,
meeting or note on the lead. An organisation turns it on with `lead_recycle_after` (ISO 8601
duration) and gets one `lead.recycle_warning` per quiet spell `lead_recycle_warning` before it.
Both steps write an assignment decision whose trigger key makes them happen once.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.assignment import AssignmentDecision
from app.models.base import new_id, utcnow
from app.models.durations import parse_duration
from app.models.events import LeadRecycleWarning
from app.models.lead import OWNED_OPEN_SQL, Activity, ActivityKind, Direction, Lead
from app.models.organisation import Organisation
from app.services import outbox
from app.services.leads.owner import set_owner

FOLLOW_UP_KINDS = [
    ActivityKind.call.value,
    ActivityKind.email.value,
    ActivityKind.meeting.value,
    ActivityKind.note.value,
]


async def organisations_recycling(
    session: AsyncSession,
) -> list[tuple[uuid.UUID, timedelta, timedelta | None]]:
    """(org id, recycle after, warn before) for every organisation that recycles leads."""
    rows = await session.execute(
        select(col(Organisation.id), col(Organisation.settings)).where(
            col(Organisation.settings)["lead_recycle_after"].as_string().is_not(None)
        )
    )
    out = []
    for org_id, settings in rows:
        warning = settings.get("lead_recycle_warning")
        out.append(
            (
                org_id,
                parse_duration(settings["lead_recycle_after"]),
                parse_duration(warning) if warning else None,
            )
        )
    return out


def _last_follow_up() -> Any:
    latest_touch = (
        select(func.max(col(Activity.occurred_at)))
        .where(
            col(Activity.org_id) == col(Lead.org_id),
            col(Activity.lead_id) == col(Lead.id),
            col(Activity.direction) == Direction.outbound.value,
            col(Activity.kind).in_(FOLLOW_UP_KINDS),
        )
        .scalar_subquery()
    )
    return func.greatest(col(Lead.assigned_at), col(Lead.first_contacted_at), latest_touch)


async def quiet_leads(
    session: AsyncSession, *, older_than: datetime, limit: int = 200
) -> list[tuple[Lead, datetime]]:
    """Owned open leads whose last follow-up is before `older_than`, with that time."""
    rows = await session.execute(quiet_leads_stmt(older_than, limit=limit))
    return [(lead, when) for lead, when in rows]


def quiet_leads_stmt(older_than: datetime, *, limit: int = 200) -> Any:
    """The statement of quiet_leads (read through the partial index ix_leads_owned_open)."""
    last = _last_follow_up().label("last_follow_up")
    return (
        select(Lead, last)
        .where(text(f"leads.owner_id IS NOT NULL AND {OWNED_OPEN_SQL}"), last < older_than)
        .limit(limit)
        # Locked and re-read: a lead being changed right now is left for the next sweep, and the
        # version bumped here is never a stale one.
        .with_for_update(of=Lead, skip_locked=True)
        .execution_options(populate_existing=True)
    )


async def _once(
    session: AsyncSession, lead: Lead, *, trigger: str, key: str, outcome: str, explanation: str
) -> bool:
    inserted = (
        await session.execute(
            insert(AssignmentDecision)
            .values(
                id=new_id(),
                org_id=lead.org_id,
                lead_id=lead.id,
                trigger=trigger,
                trigger_key=key,
                outcome=outcome,
                previous_owner_id=lead.owner_id,
                chosen_user_id=None if outcome == "recycled" else lead.owner_id,
                explanation=explanation,
                rules_considered=[],
                candidates=[],
                state_before={},
                state_after={},
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["org_id", "trigger_key"])
            .returning(col(AssignmentDecision.id))
        )
    ).scalar_one_or_none()
    return inserted is not None


async def sweep_organisation(
    session: AsyncSession, *, recycle_after: timedelta, warn_before: timedelta | None
) -> tuple[int, int]:
    """Warn about and recycle the quiet leads of the session's organisation: (warned, recycled)."""
    now = utcnow()
    recycled = 0
    for lead, last in await quiet_leads(session, older_than=now - recycle_after):
        key = f"recycle:{lead.id}:{last.isoformat()}"
        text = f"No follow-up since {last.isoformat()} (more than {recycle_after}); back to the pool."
        if not await _once(session, lead, trigger="recycle", key=key, outcome="recycled", explanation=text):
            continue
        await set_owner(
            session, lead, None, team_id=lead.team_id, actor=None, action="recycle", reason="no_follow_up"
        )
        recycled += 1
    warned = 0
    if warn_before is not None and warn_before < recycle_after:
        for lead, last in await quiet_leads(session, older_than=now - (recycle_after - warn_before)):
            key = f"recycle_warning:{lead.id}:{last.isoformat()}"
            text = f"No follow-up since {last.isoformat()}; recycled at {(last + recycle_after).isoformat()}."
            if await _once(
                session, lead, trigger="recycle_warning", key=key, outcome="warned", explanation=text
            ):
                warning = LeadRecycleWarning(
                    lead_id=lead.id, owner_id=lead.owner_id, recycle_at=last + recycle_after
                )
                await outbox.emit(session, warning)
                warned += 1
    await session.flush()
    return warned, recycled
