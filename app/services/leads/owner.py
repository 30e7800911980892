"""A lead's owner changes here and nowhere else: manual assignment, claim, unassignment, the rules
engine, SLA reassignment and escalation, and recycling all call `set_owner`, so every change sets
the same fields, bumps the version, is audited and emits the same event."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.base import utcnow
from app.models.events import LeadAssigned, LeadRecycled
from app.models.lead import Lead
from app.security import Principal
from app.services import audit, outbox
from app.services.common import apply_changes


async def set_owner(
    session: AsyncSession,
    lead: Lead,
    owner_id: uuid.UUID | None,
    *,
    team_id: uuid.UUID | None,
    actor: Principal | None,
    action: str,
    by: str | None = None,
    rule_id: uuid.UUID | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Give the lead to `owner_id` in `team_id`, or put it back in the pool (None); audit it as
    `action` (actor None: the system). A new owner emits lead.assigned (`by`, default `action`;
    `rule_id` when a rule chose); a lead put back in the pool for a `reason` emits lead.recycled.
    Returns the field diff."""
    previous_owner = lead.owner_id
    diff = apply_changes(
        lead,
        {
            "owner_id": owner_id,
            "team_id": team_id,
            "pooled": owner_id is None,
            "assigned_at": utcnow() if owner_id else None,
        },
    )
    audit.record(
        session,
        actor=actor,
        entity="lead",
        entity_id=lead.id,
        action=action,
        changes=diff,
        org_id=lead.org_id,
    )
    if owner_id is not None:
        assigned = LeadAssigned(lead_id=lead.id, owner_id=owner_id, team_id=team_id, by=by or action)
        if rule_id is not None:
            assigned.rule_id = rule_id
        await outbox.emit(session, assigned)
    elif reason is not None:
        await outbox.emit(
            session, LeadRecycled(lead_id=lead.id, previous_owner_id=previous_owner, reason=reason)
        )
    return diff
