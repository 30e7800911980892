"""Explicit merge of two leads: the duplicate folds into the kept lead, audited on both."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, FieldError, ValidationFailed
from app.models.intake import InboundEvent
from app.models.lead import Activity, Lead
from app.security import Principal
from app.services import audit
from app.services.common import apply_changes, check_version
from app.services.leads.scoring import rescore
from app.services.leads.service import writable


async def merge_leads(
    session: AsyncSession,
    principal: Principal,
    lead_id: uuid.UUID,
    duplicate_id: uuid.UUID,
    *,
    expected_version: int | None,
) -> Lead:
    """Fold `duplicate_id` into this lead: fill empty fields, move its activities, mark it merged."""
    if lead_id == duplicate_id:
        raise ValidationFailed(
            "A lead cannot be merged into itself.",
            errors=[FieldError(field="duplicate_id", code="same_lead", message="must be another lead")],
        )
    first, second = sorted([lead_id, duplicate_id])
    locked = {lid: await writable(session, principal, lid) for lid in (first, second)}
    lead, dup = locked[lead_id], locked[duplicate_id]
    check_version(lead, expected_version)
    if dup.duplicate_of is not None or lead.duplicate_of is not None:
        raise Conflict("One of these leads was already merged.")
    filled: dict[str, Any] = {}
    for name in ("name", "email", "phone", "company", "title", "country", "industry", "message"):
        if getattr(lead, name) in (None, "") and getattr(dup, name) not in (None, ""):
            filled[name] = getattr(dup, name)
    if not (lead.phone or lead.phone_raw or filled.get("phone")) and dup.phone_raw:
        filled["phone_raw"] = dup.phone_raw
    filled["attributes"] = {**dup.attributes, **lead.attributes}
    filled["tags"] = list(dict.fromkeys([*lead.tags, *dup.tags]))
    filled["touch_count"] = lead.touch_count + dup.touch_count
    if lead.possible_duplicate_of == dup.id:
        filled["possible_duplicate_of"] = None
    apply_changes(dup, {"duplicate_of": lead.id})
    diff = apply_changes(lead, filled)
    moved = await session.execute(
        update(Activity).where(col(Activity.lead_id) == dup.id).values(lead_id=lead.id)
    )
    await session.execute(
        update(InboundEvent).where(col(InboundEvent.lead_id) == dup.id).values(lead_id=lead.id)
    )
    await rescore(session, lead)
    audit.record(
        session,
        actor=principal,
        entity="lead",
        entity_id=lead.id,
        action="merge",
        changes={**diff, "merged_lead_id": str(dup.id), "activities_moved": getattr(moved, "rowcount", 0)},
    )
    audit.record(
        session,
        actor=principal,
        entity="lead",
        entity_id=dup.id,
        action="merged_into",
        changes={"into": str(lead.id)},
    )
    await session.flush()
    return lead
