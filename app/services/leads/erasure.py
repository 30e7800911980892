"""Erasure (right to be forgotten): a lead's personal data goes; anonymous counts for metrics stay.

Kept: status, source, source id, utm and provider, owner, team, score, timestamps and the
number of touches, so funnels and rep metrics still add up. Removed, for the lead and every
duplicate merged into it: name, email, phone, title, message, attributes, the text of their
activities, the raw bodies and headers of their inbound events and of unlinked inbound events
that carry the email or phone (rejected posts), the values in their audit-log diffs, the
contact the lead was converted into, and the data of outbound webhook deliveries about them.
The audit entry of the erasure names the fields, never their values.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden
from app.models.account import Account, Contact
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.deal import Deal
from app.models.events import LeadErased
from app.models.intake import InboundEvent
from app.models.lead import Activity, Lead
from app.security import Principal
from app.services import audit, outbox
from app.services.leads.service import get_lead

ERASED_FIELDS = ("name", "email", "phone", "phone_raw", "title", "message")
KEPT_DETAIL = ("utm", "source_name", "provider", "event_type")


async def erase_lead(session: AsyncSession, principal: Principal, lead_id: uuid.UUID) -> Lead:
    """Remove the lead's personal data everywhere it is stored (admins); audited."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can erase personal data.")
    lead = await get_lead(session, principal, lead_id, lock=True)
    if lead.erased_at is not None:
        raise Conflict("This lead was already erased.")
    now = utcnow()
    needles = _needles(lead)
    personal = [v for v in (lead.name, lead.email, lead.phone) if v]
    group = [lead, *await _merged_into(session, lead)]
    ids = [member.id for member in group]
    cleared = [name for name in ERASED_FIELDS if getattr(lead, name)]
    if lead.attributes:
        cleared.append("attributes")
    for member in group:
        _clear(member, now)
    activities = await session.execute(
        update(Activity)
        .where(col(Activity.lead_id).in_(ids))
        .values(subject=None, body=None, details={}, message_id=None, updated_at=now)
    )
    events = await session.execute(
        update(InboundEvent)
        .where(col(InboundEvent.lead_id).in_(ids))
        .values(body=None, headers={}, message_id=None, reason=None)
    )
    unlinked = 0
    if needles:
        found = await session.execute(
            text(
                "UPDATE inbound_events SET body = NULL, headers = '{}'::jsonb, message_id = NULL,"
                " reason = NULL WHERE org_id = :org AND lead_id IS NULL AND body IS NOT NULL"
                " AND (" + " OR ".join(f"position(:n{i} in body) > 0" for i in range(len(needles))) + ")"
            ),
            {"org": lead.org_id, **{f"n{i}": needle for i, needle in enumerate(needles)}},
        )
        unlinked = int(getattr(found, "rowcount", 0) or 0)
    entity_ids = list(ids)
    if lead.converted_contact_id is not None:
        contact = await session.get(Contact, lead.converted_contact_id)
        if contact is not None:
            contact.name = "Erased contact"
            contact.email = contact.phone = contact.title = None
            contact.attributes = {}
            contact.updated_at = now
            contact.version += 1
            entity_ids.append(contact.id)
    await _scrub_converted(session, lead, personal, now)
    # Audit diffs keep which fields changed, not their values.
    await session.execute(
        text(
            "UPDATE audit_log SET changes = COALESCE((SELECT jsonb_object_agg(k, to_jsonb('erased'::text))"
            " FROM jsonb_object_keys(changes) AS k), '{}'::jsonb)"
            " WHERE org_id = :org AND entity_id = ANY(:ids)"
        ),
        {"org": lead.org_id, "ids": entity_ids},
    )
    await session.execute(
        text(
            "UPDATE webhook_deliveries SET payload = jsonb_set(payload, '{data}',"
            " jsonb_build_object('lead_id', payload->'data'->'lead_id', 'erased', true))"
            " WHERE org_id = :org AND payload->'data'->>'lead_id' = ANY(:ids)"
        ),
        {"org": lead.org_id, "ids": [str(i) for i in ids]},
    )
    audit.record(
        session,
        actor=principal,
        entity="lead",
        entity_id=lead.id,
        action="erase",
        changes={
            "fields": cleared,
            "activities": getattr(activities, "rowcount", 0),
            "inbound_events": getattr(events, "rowcount", 0) + unlinked,
            "merged_duplicates": len(group) - 1,
            "contact": lead.converted_contact_id is not None,
        },
    )
    await outbox.emit(session, LeadErased(lead_id=lead.id))
    await session.flush()
    return lead


def _clear(lead: Lead, now: datetime) -> None:
    for name in ERASED_FIELDS:
        setattr(lead, name, None)
    lead.attributes = {}
    lead.source_detail = {k: v for k, v in lead.source_detail.items() if k in KEPT_DETAIL}
    lead.erased_at = lead.erased_at or now
    lead.updated_at = now
    lead.version += 1


def _needles(lead: Lead) -> list[bytes]:
    """How the lead's email and phone appear in raw bodies: as typed, and form-urlencoded."""
    found: set[bytes] = set()
    for value in (lead.email, lead.phone):
        if value:
            found |= {value.encode(), quote(value, safe="").encode(), quote(value).encode()}
    return sorted(found)


async def _merged_into(session: AsyncSession, lead: Lead) -> list[Lead]:
    """Every lead merged into this one, directly or through a chain, locked."""
    found: list[Lead] = []
    frontier = [lead.id]
    seen = {lead.id}
    while frontier:
        rows = (
            await session.execute(select(Lead).where(col(Lead.duplicate_of).in_(frontier)).with_for_update())
        ).scalars()
        frontier = []
        for row in rows:
            if row.id not in seen:
                seen.add(row.id)
                found.append(row)
                frontier.append(row.id)
    return found


ERASED = "erased"


def _scrub(value: Any, personal: list[str]) -> Any:
    """The value with every occurrence of the person's name, email or phone replaced."""
    if isinstance(value, str):
        for word in personal:
            value = value.replace(word, ERASED)
        return value
    if isinstance(value, list):
        return [_scrub(v, personal) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, personal) for k, v in value.items()}
    return value


async def _scrub_converted(session: AsyncSession, lead: Lead, personal: list[str], now: datetime) -> None:
    """The account and deal made from the lead are business records and stay; a name built from
    the person's (no company was given) loses it, in the row and in its audit diffs."""
    if not personal:
        return
    account = await session.get(Account, lead.converted_account_id) if lead.converted_account_id else None
    deal = await session.get(Deal, lead.converted_deal_id) if lead.converted_deal_id else None
    targets: list[Account | Deal] = [row for row in (account, deal) if row is not None]
    for row in targets:
        scrubbed = _scrub(row.name, personal)
        if scrubbed != row.name:
            row.name = scrubbed
            row.updated_at = now
            row.version += 1
    if not targets:
        return
    entries = (
        await session.execute(
            select(AuditEntry).where(col(AuditEntry.entity_id).in_([t.id for t in targets]))
        )
    ).scalars()
    for entry in entries:
        changes = _scrub(entry.changes, personal)
        if changes != entry.changes:
            entry.changes = changes
