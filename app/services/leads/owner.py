"""A lead's owner changes here and nowhere else: manual assignment, claim, unassignment, the rules
engine, SLA reassignment and escalation, and recycling all call `set_owner`, so every change sets
the same fields, bumps the version, is audited and emits the same event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi.encoders import jsonable_encoder
from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.audit import AuditEntry
from app.models.base import column_values, utcnow
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


@dataclass(frozen=True)
class NewOwner:
    """A locked lead without an owner that a batch gives to `owner_id` (`set_owners`), with the
    lead's current values of the fields `set_owner` changes."""

    lead_id: uuid.UUID
    owner_id: uuid.UUID
    team_id: uuid.UUID | None
    old_team_id: uuid.UUID | None
    old_pooled: bool
    old_assigned_at: datetime | None
    by: str
    rule_id: uuid.UUID | None = None


_LEADS: Table = Lead.__table__  # type: ignore[attr-defined]
_AUDIT: Table = AuditEntry.__table__  # type: ignore[attr-defined]
# One UPDATE, sent as one executemany: what `set_owner`'s `apply_changes` sets on a lead that
# gets an owner (version bumped, updated_at stamped).
_GIVE = (
    update(_LEADS)
    .where(_LEADS.c.org_id == bindparam("b_org_id"), _LEADS.c.id == bindparam("b_id"))
    .values(
        owner_id=bindparam("b_owner_id"),
        team_id=bindparam("b_team_id"),
        pooled=False,
        assigned_at=bindparam("b_at"),
        updated_at=bindparam("b_at"),
        version=_LEADS.c.version + 1,
    )
)


def _json(value: Any) -> Any:
    """`jsonable_encoder` of an owner field's value (ids, times, flags) without its walk."""
    if value is None or type(value) is bool:
        return value
    if type(value) is uuid.UUID:
        return str(value)
    if type(value) is datetime:
        return value.isoformat()
    return jsonable_encoder(value)


async def set_owners(
    session: AsyncSession, org_id: uuid.UUID, changes: Sequence[NewOwner], *, action: str
) -> None:
    """`set_owner(..., actor=None, action=action, by=..., rule_id=...)` for many leads without an
    owner at once (the assignment batch): the same lead fields, the same audit entries and the same
    lead.assigned events, written with one statement per table in the session's transaction
    instead of through the unit of work (tests/services/assignment/test_batch.py holds the two to
    identical rows). The caller holds the leads' row locks; the session's loaded `Lead` objects,
    if any, are not refreshed."""
    if not changes:
        return
    now = utcnow()
    request_id = correlation_id.get()
    leads: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    events: list[LeadAssigned] = []
    for change in changes:
        diff: dict[str, Any] = {"owner_id": [None, str(change.owner_id)]}
        if change.old_team_id != change.team_id:
            diff["team_id"] = [_json(change.old_team_id), _json(change.team_id)]
        if change.old_pooled is not False:
            diff["pooled"] = [_json(change.old_pooled), False]
        if change.old_assigned_at != now:
            diff["assigned_at"] = [_json(change.old_assigned_at), now.isoformat()]
        leads.append(
            {
                "b_org_id": org_id,
                "b_id": change.lead_id,
                "b_owner_id": change.owner_id,
                "b_team_id": change.team_id,
                "b_at": now,
            }
        )
        entry = column_values(
            AuditEntry,
            {
                "entity": "lead",
                "entity_id": change.lead_id,
                "action": action,
                "changes": diff,
                "actor_user_id": None,
                "actor_api_key_id": None,
                "request_id": request_id,
            },
        )
        entry["org_id"] = org_id
        entries.append(entry)
        assigned = LeadAssigned(
            lead_id=change.lead_id, owner_id=change.owner_id, team_id=change.team_id, by=change.by
        )
        if change.rule_id is not None:
            assigned.rule_id = change.rule_id
        events.append(assigned)
    conn = await session.connection()
    await conn.execute(_GIVE, leads)
    await conn.execute(insert(_AUDIT), entries)
    await outbox.emit_many(session, org_id, events)
