"""Erasure (right to be forgotten): a lead's personal data goes; anonymous counts for metrics stay.

Kept: status, source, source id, utm and provider, owner, team, score, timestamps and the
number of touches, so funnels and rep metrics still add up. Removed: name, email, phone,
title, message, attributes, the text of its activities, and the raw bodies and headers of its
inbound events. The audit entry names the fields, never their values.
"""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden
from app.models.base import utcnow
from app.models.events import LeadErased
from app.models.intake import InboundEvent
from app.models.lead import Activity, Lead
from app.security import Principal
from app.services import audit, outbox
from app.services.leads.service import get_lead

ERASED_FIELDS = ("name", "email", "phone", "title", "message")
KEPT_DETAIL = ("utm", "source_name", "provider", "event_type")


async def erase_lead(session: AsyncSession, principal: Principal, lead_id: uuid.UUID) -> Lead:
    """Remove the lead's personal data everywhere it is stored (admins); audited."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can erase personal data.")
    lead = await get_lead(session, principal, lead_id, lock=True)
    if lead.erased_at is not None:
        raise Conflict("This lead was already erased.")
    now = utcnow()
    cleared = [name for name in ERASED_FIELDS if getattr(lead, name)]
    for name in ERASED_FIELDS:
        setattr(lead, name, None)
    if lead.attributes:
        cleared.append("attributes")
    lead.attributes = {}
    lead.source_detail = {k: v for k, v in lead.source_detail.items() if k in KEPT_DETAIL}
    lead.erased_at = now
    lead.updated_at = now
    lead.version += 1
    activities = await session.execute(
        update(Activity)
        .where(col(Activity.lead_id) == lead.id)
        .values(subject=None, body=None, details={}, message_id=None, updated_at=now)
    )
    events = await session.execute(
        update(InboundEvent)
        .where(col(InboundEvent.lead_id) == lead.id)
        .values(body=None, headers={}, message_id=None, reason=None)
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
            "inbound_events": getattr(events, "rowcount", 0),
        },
    )
    await outbox.emit(session, LeadErased(lead_id=lead.id))
    await session.flush()
    return lead
