"""Leads: who sees and changes which lead, the status machine, assignment, the pool, the timeline.

Visibility: admins and viewers (read-only) see every lead; managers their team's leads (the
lead's team, or an owner in their team) and the pool; reps their own leads and the pool.
A lead a caller cannot see is a 404, one they can see but not change a 403.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import SessionStatements
from app.errors import (
    Conflict,
    DuplicateExists,
    FieldError,
    Forbidden,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from app.models.base import utcnow
from app.models.common import Role
from app.models.events import LEAD_STATUS_EVENTS, LeadContacted
from app.models.lead import (
    CONTACT_KINDS,
    Activity,
    ActivityCreate,
    Direction,
    Lead,
    LeadCreate,
    LeadSource,
    LeadStatus,
    LeadUpdate,
)
from app.models.organisation import Organisation
from app.models.user import Team, User
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit, outbox
from app.services.common import apply_changes, check_version, contains
from app.services.leads.ingest import Ingested, count_open_owned, ingest, lock_and_find
from app.services.leads.normalise import LeadInput, normalise
from app.services.leads.owner import set_owner
from app.services.leads.scoring import rescore

TRANSITIONS: dict[LeadStatus, frozenset[LeadStatus]] = {
    LeadStatus.new: frozenset({LeadStatus.working, LeadStatus.qualified, LeadStatus.unqualified}),
    LeadStatus.working: frozenset({LeadStatus.new, LeadStatus.qualified, LeadStatus.unqualified}),
    LeadStatus.qualified: frozenset({LeadStatus.working, LeadStatus.unqualified}),
    LeadStatus.unqualified: frozenset({LeadStatus.new, LeadStatus.working}),
    LeadStatus.converted: frozenset(),
}


def visible(principal: Principal) -> Any:
    """The SQL condition for the leads this caller may read."""
    if principal.role in (Role.admin, Role.viewer):
        return true()
    mine = [col(Lead.pooled).is_(True), col(Lead.owner_id) == principal.user_id]
    if principal.role == Role.manager and principal.team_id is not None:
        team_members = select(col(User.id)).where(col(User.team_id) == principal.team_id)
        mine += [col(Lead.team_id) == principal.team_id, col(Lead.owner_id).in_(team_members)]
    return or_(*mine)


async def _owner_team(session: AsyncSession, user_id: uuid.UUID | None) -> uuid.UUID | None:
    if user_id is None:
        return None
    user = await session.get(User, user_id)
    return user.team_id if user else None


async def can_write(session: AsyncSession, principal: Principal, lead: Lead) -> bool:
    """Admins any lead; managers their team's and the pool; reps their own."""
    if principal.role == Role.admin:
        return True
    if principal.role == Role.viewer:
        return False
    if lead.owner_id == principal.user_id:
        return True
    if principal.role == Role.manager:
        if lead.pooled:
            return True
        team = principal.team_id
        return team is not None and (
            lead.team_id == team or await _owner_team(session, lead.owner_id) == team
        )
    return False


async def get_lead(
    session: AsyncSession, principal: Principal, lead_id: uuid.UUID, *, lock: bool = False
) -> Lead:
    """A lead the caller may see (deleted leads are gone), else 404."""
    stmt = select(Lead).where(col(Lead.id) == lead_id, col(Lead.deleted_at).is_(None), visible(principal))
    if lock:
        stmt = stmt.with_for_update()
    lead = (await session.execute(stmt)).scalar_one_or_none()
    if lead is None:
        raise NotFound(f"No lead with id {lead_id}.")
    return lead


async def writable(session: AsyncSession, principal: Principal, lead_id: uuid.UUID) -> Lead:
    """The lead, locked, if the caller may change it (404 if unseen, 403 if not theirs, 409 if erased)."""
    lead = await get_lead(session, principal, lead_id, lock=True)
    if not await can_write(session, principal, lead):
        what = "claim it first" if lead.pooled else "it is not yours"
        raise Forbidden(f"You cannot change this lead: {what}.")
    if lead.erased_at is not None:
        raise Conflict("This lead was erased.")
    return lead


async def _check_owner(session: AsyncSession, principal: Principal, owner_id: uuid.UUID) -> User:
    user = await session.get(User, owner_id)
    if user is None or not user.active:
        raise ValidationFailed(
            "Unknown or inactive owner.",
            errors=[FieldError(field="owner_id", code="not_found", message="no such active user")],
        )
    if principal.role == Role.rep and owner_id != principal.user_id:
        raise Forbidden("A rep can only own leads themselves.")
    if principal.role == Role.manager and owner_id != principal.user_id and user.team_id != principal.team_id:
        raise Forbidden("A manager can only assign leads within their team.")
    return user


async def _check_team(session: AsyncSession, team_id: uuid.UUID | None) -> None:
    if team_id is not None and await session.get(Team, team_id) is None:
        raise ValidationFailed(
            "Unknown team.", errors=[FieldError(field="team_id", code="not_found", message="no such team")]
        )


async def create_lead(session: AsyncSession, principal: Principal, data: LeadCreate) -> Ingested:
    """Create a lead through the API; the same email/phone as an open lead merges into it.

    Without `owner_id`, a rep's lead is their own and anyone else's goes to the pool."""
    org = await session.get(Organisation, principal.org_id)
    assert org is not None
    owner_id = data.owner_id or (principal.user_id if principal.role == Role.rep else None)
    team_id = data.team_id
    if owner_id is not None:
        owner = await _check_owner(session, principal, owner_id)
        team_id = team_id or owner.team_id
    await _check_team(session, team_id)
    fields = data.model_dump(exclude={"owner_id", "team_id"})
    lead_input = LeadInput(source=LeadSource.api, owner_id=owner_id, team_id=team_id, **fields)
    errors = normalise(lead_input, default_regions=[org.typed_settings().default_phone_country])
    if errors:
        raise ValidationFailed("The lead is not valid.", errors=errors)
    await _refuse_unseen_duplicate(session, principal, lead_input)
    return await ingest(
        session, lead_input, org_id=org.id, settings=org.typed_settings(), actor=principal, record_touch=False
    )


async def _refuse_unseen_duplicate(session: AsyncSession, principal: Principal, data: LeadInput) -> None:
    """409 `duplicate_exists` (and no merge) when the email/phone is an open lead the caller cannot see:
    creating a lead must never read or change another rep's lead (OWASP API1)."""
    if principal.role in (Role.admin, Role.viewer):
        return
    existing_id = await lock_and_find(
        SessionStatements(session), principal.org_id, email=data.email, phone=data.phone
    )
    if existing_id is None:
        return
    seen = await session.execute(select(col(Lead.id)).where(col(Lead.id) == existing_id, visible(principal)))
    if seen.scalar_one_or_none() is None:
        raise DuplicateExists(
            "An open lead with this email or phone already exists and belongs to someone else; "
            "ask its owner or a manager."
        )


def _range(stmt: Any, column: Any, start: datetime | None, end: datetime | None) -> Any:
    if start is not None:
        stmt = stmt.where(column >= start)
    if end is not None:
        stmt = stmt.where(column < end)
    return stmt


async def list_leads(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    status: list[LeadStatus] | None = None,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    source: LeadSource | None = None,
    source_id: uuid.UUID | None = None,
    pooled: bool | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    updated_from: datetime | None = None,
    updated_to: datetime | None = None,
    q: str | None = None,
) -> tuple[list[Lead], str | None]:
    """The leads the caller may see, filtered (time ranges are half-open), one page."""
    stmt = select(Lead).where(col(Lead.deleted_at).is_(None), visible(principal))
    if status:
        stmt = stmt.where(col(Lead.status).in_([s.value for s in status]))
    for column, value in (
        (Lead.owner_id, owner_id),
        (Lead.team_id, team_id),
        (Lead.source, source),
        (Lead.source_id, source_id),
        (Lead.pooled, pooled),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    stmt = _range(stmt, col(Lead.created_at), created_from, created_to)
    stmt = _range(stmt, col(Lead.updated_at), updated_from, updated_to)
    if q and q.strip():
        searched = (Lead.name, Lead.email, Lead.company, Lead.phone, Lead.phone_raw)
        terms = [contains(col(c), q.strip()) for c in searched]
        digits = re.sub(r"\D", "", q)
        if len(digits) >= 4:
            terms.append(col(Lead.phone).like(f"%{digits}%"))
        stmt = stmt.where(or_(*terms))
    return await paginate(
        session,
        stmt,
        page,
        id_column=Lead.id,
        sortable={"created_at": Lead.created_at, "updated_at": Lead.updated_at, "score": Lead.score},
        default_sort="-created_at",
    )


async def update_lead(
    session: AsyncSession,
    principal: Principal,
    lead_id: uuid.UUID,
    data: LeadUpdate,
    *,
    expected_version: int | None,
) -> Lead:
    """Change fields (normalised again), or the status along the allowed transitions."""
    lead = await writable(session, principal, lead_id)
    check_version(lead, expected_version)
    changes = data.changes()
    if "status" in changes:
        new = changes["status"] = LeadStatus(changes["status"])
        if new != lead.status and new not in TRANSITIONS[lead.status]:
            raise InvalidTransition(f"A lead cannot go from {lead.status} to {new} this way.")
    duplicate = changes.get("possible_duplicate_of")
    if duplicate is not None:
        seen = await session.execute(
            select(col(Lead.id)).where(col(Lead.id) == duplicate, visible(principal))
        )
        if duplicate == lead.id or seen.scalar_one_or_none() is None:
            raise ValidationFailed(
                "possible_duplicate_of must be another lead you can see.",
                errors=[FieldError(field="possible_duplicate_of", code="not_found", message="no such lead")],
            )
    for name in ("attributes", "tags"):
        if name in changes and changes[name] is None:
            changes[name] = {} if name == "attributes" else []
    if "email" in changes or "phone" in changes:
        org = await session.get(Organisation, principal.org_id)
        assert org is not None
        probe = LeadInput(
            source=lead.source,
            email=changes.get("email", lead.email),
            phone=changes.get("phone", lead.phone or lead.phone_raw),
            country=changes.get("country", lead.country),
        )
        errors = normalise(probe, default_regions=[org.typed_settings().default_phone_country])
        if errors:
            raise ValidationFailed("The lead is not valid.", errors=errors)
        changes["email"], changes["phone"], changes["phone_raw"] = probe.email, probe.phone, probe.phone_raw
    diff = apply_changes(lead, changes, expected_version=None)
    if diff:
        await rescore(session, lead)
        audit.record(
            session, actor=principal, entity="lead", entity_id=lead.id, action="update", changes=diff
        )
        await session.flush()
    return lead


async def delete_lead(
    session: AsyncSession, principal: Principal, lead_id: uuid.UUID, *, expected_version: int | None
) -> Lead:
    """Soft delete: gone from lists and reads; exports show it as a tombstone."""
    lead = await writable(session, principal, lead_id)
    diff = apply_changes(lead, {"deleted_at": utcnow()}, expected_version=expected_version)
    audit.record(session, actor=principal, entity="lead", entity_id=lead.id, action="delete", changes=diff)
    await session.flush()
    return lead


async def _set_owner(
    session: AsyncSession,
    principal: Principal,
    lead: Lead,
    owner_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
    *,
    action: str,
) -> Lead:
    await set_owner(session, lead, owner_id, team_id=team_id, actor=principal, action=action)
    await session.flush()
    return lead


async def assign_lead(
    session: AsyncSession,
    principal: Principal,
    lead_id: uuid.UUID,
    *,
    owner_id: uuid.UUID,
    team_id: uuid.UUID | None,
    expected_version: int | None,
) -> Lead:
    """Give the lead to a user (admins anyone; managers their team)."""
    if principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers assign leads; reps claim them from the pool.")
    lead = await writable(session, principal, lead_id)
    check_version(lead, expected_version)
    owner = await _check_owner(session, principal, owner_id)
    await _check_team(session, team_id)
    return await _set_owner(session, principal, lead, owner_id, team_id or owner.team_id, action="assign")


async def unassign_lead(
    session: AsyncSession, principal: Principal, lead_id: uuid.UUID, *, expected_version: int | None
) -> Lead:
    """Put the lead back in the pool (its owner, their manager, or an admin)."""
    lead = await writable(session, principal, lead_id)
    check_version(lead, expected_version)
    return await _set_owner(session, principal, lead, None, lead.team_id, action="unassign")


async def claim_lead(session: AsyncSession, principal: Principal, lead_id: uuid.UUID) -> Lead:
    """Take a pooled open lead, unless the caller already owns `lead_claim_limit` open leads."""
    if principal.role == Role.viewer:
        raise Forbidden("Viewers cannot claim leads.")
    lead = await get_lead(session, principal, lead_id, lock=True)
    if not lead.pooled or lead.owner_id is not None:
        raise Conflict("This lead is not in the pool.")
    if not lead.is_open:
        raise Conflict("Only open leads can be claimed.")
    org = await session.get(Organisation, principal.org_id)
    assert org is not None
    limit = org.typed_settings().lead_claim_limit
    # Serialise one user's claims so two at once cannot both pass the limit.
    await session.execute(select(User).where(col(User.id) == principal.user_id).with_for_update())
    if await count_open_owned(session, principal.user_id) >= limit:
        raise Conflict(f"You already own {limit} open leads, the claim limit.")
    return await _set_owner(session, principal, lead, principal.user_id, principal.team_id, action="claim")


async def set_status(
    session: AsyncSession,
    principal: Principal,
    lead_id: uuid.UUID,
    status: LeadStatus,
    *,
    reason: str | None,
    expected_version: int | None,
) -> Lead:
    """Qualify or disqualify (a reason is required to disqualify)."""
    lead = await writable(session, principal, lead_id)
    check_version(lead, expected_version)
    if status == LeadStatus.unqualified and not reason:
        raise ValidationFailed(
            "A reason is required to disqualify a lead.",
            errors=[FieldError(field="reason", code="required", message="why the lead is unqualified")],
        )
    if status != lead.status and status not in TRANSITIONS[lead.status]:
        raise InvalidTransition(f"A {lead.status} lead cannot become {status.value}.")
    diff = apply_changes(lead, {"status": status, "status_reason": reason})
    audit.record(
        session, actor=principal, entity="lead", entity_id=lead.id, action=status.value, changes=diff
    )
    await outbox.emit(session, LEAD_STATUS_EVENTS[status.value](lead_id=lead.id, reason=reason))
    await session.flush()
    return lead


async def add_activity(
    session: AsyncSession, principal: Principal, lead_id: uuid.UUID, data: ActivityCreate
) -> Activity:
    """Log a call, email, meeting, note or task; the first outbound contact marks the lead contacted."""
    lead = await writable(session, principal, lead_id)
    if data.owner_id is not None:
        await _check_owner(session, principal, data.owner_id)
    activity = Activity(
        lead_id=lead.id,
        created_by=principal.user_id,
        **{k: v for k, v in data.model_dump().items() if v is not None},
    )
    activity.owner_id = data.owner_id or principal.user_id
    session.add(activity)
    is_contact = activity.kind in CONTACT_KINDS and activity.direction == Direction.outbound
    if is_contact and lead.first_contacted_at is None:
        changes: dict[str, Any] = {"first_contacted_at": activity.occurred_at}
        if lead.status == LeadStatus.new:
            changes["status"] = LeadStatus.working
        diff = apply_changes(lead, changes)
        audit.record(
            session, actor=principal, entity="lead", entity_id=lead.id, action="contacted", changes=diff
        )
        await outbox.emit(session, LeadContacted(lead_id=lead.id, at=activity.occurred_at))
    await session.flush()
    return activity


async def list_activities(
    session: AsyncSession, principal: Principal, lead_id: uuid.UUID, page: PageParams
) -> tuple[list[Activity], str | None]:
    """The lead's timeline, newest first by default."""
    lead = await get_lead(session, principal, lead_id)
    return await paginate(
        session,
        select(Activity).where(col(Activity.lead_id) == lead.id),
        page,
        id_column=Activity.id,
        sortable={"occurred_at": Activity.occurred_at, "created_at": Activity.created_at},
        default_sort="-occurred_at",
    )
