"""The intake inbox: list and read inbound events, replay rejected ones after fixing the mapping."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import AppError, Conflict, Forbidden
from app.models.intake import (
    EventStatus,
    InboundEvent,
    InboundEventRead,
    IntakeSource,
    SignatureVerdict,
    SourceKind,
)
from app.models.lead import Lead
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import get_or_404
from app.services.intake.email import ingest_email_body
from app.services.intake.payloads import parse_body
from app.services.intake.service import Outcome, ingest_webhook_payload, lead_input, process, reject
from app.services.intake.sources import _require_reader
from app.services.leads.service import visible

UNVERIFIED = {
    SignatureVerdict.invalid,
    SignatureVerdict.stale,
    SignatureVerdict.missing,
    SignatureVerdict.replayed,
}


def to_read(event: InboundEvent, *, include_body: bool = False) -> InboundEventRead:
    """The API view; the body as text only when asked for."""
    read = InboundEventRead.model_validate(event, from_attributes=True, update={"body": None})
    if include_body and event.body is not None:
        read.body = event.body.decode("utf-8", errors="replace")
    return read


async def list_events(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    status: EventStatus | None = None,
    source_id: uuid.UUID | None = None,
    kind: SourceKind | None = None,
    lead_id: uuid.UUID | None = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
) -> tuple[list[InboundEvent], str | None]:
    """Inbound events of the organisation, newest first, filtered."""
    _require_reader(principal)
    stmt = select(InboundEvent)
    for column, value in (
        (InboundEvent.status, status),
        (InboundEvent.source_id, source_id),
        (InboundEvent.kind, kind),
        (InboundEvent.lead_id, lead_id),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    if received_from is not None:
        stmt = stmt.where(col(InboundEvent.received_at) >= received_from)
    if received_to is not None:
        stmt = stmt.where(col(InboundEvent.received_at) < received_to)
    return await paginate(
        session,
        stmt,
        page,
        id_column=InboundEvent.id,
        sortable={"received_at": InboundEvent.received_at},
        default_sort="-received_at",
    )


async def get_event(session: AsyncSession, principal: Principal, event_id: uuid.UUID) -> InboundEvent:
    """One inbound event."""
    _require_reader(principal)
    return await get_or_404(session, InboundEvent, event_id, what="inbound event")


async def check_body_access(session: AsyncSession, principal: Principal, event: InboundEvent) -> None:
    """Raw bodies (personal data, maybe secrets) are for admins, and for managers only when the
    event's lead is one they can see; a rejected event without a lead is admin-only."""
    if principal.is_admin:
        return
    if event.lead_id is not None:
        seen = await session.execute(
            select(col(Lead.id)).where(col(Lead.id) == event.lead_id, visible(principal))
        )
        if seen.scalar_one_or_none() is not None:
            return
    raise Forbidden("Only an admin, or a manager who can see the event's lead, may read its raw body.")


async def replay(
    session: AsyncSession, principal: Principal, event_id: uuid.UUID, *, max_part_size: int
) -> Outcome:
    """Run a rejected event again with its source's current mapping (admins)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin can replay inbound events.")
    event = await get_or_404(session, InboundEvent, event_id, what="inbound event")
    if event.status != EventStatus.rejected:
        raise Conflict(f"Only rejected events can be replayed; this one is {event.status}.")
    if event.body is None:
        raise Conflict("This event's body was not stored (it was over the size limit).")
    if event.signature in UNVERIFIED:
        raise Conflict("This event failed its signature check; it cannot be replayed.")
    source = await session.get(IntakeSource, event.source_id) if event.source_id else None
    if source is None or source.deleted_at is not None:
        raise Conflict("This event's source no longer exists.")
    event.replays += 1
    event.reason = None
    audit.record(session, actor=principal, entity="inbound_event", entity_id=event.id, action="replay")
    outcome = await _run(session, source, event, event.body, max_part_size=max_part_size)
    # After a failed attempt the outcome holds a copy of the event (the attempt was rolled back).
    outcome.event = await session.merge(outcome.event)
    await session.flush()
    return outcome


async def _run(
    session: AsyncSession, source: IntakeSource, event: InboundEvent, body: bytes, *, max_part_size: int
) -> Outcome:
    kind = SourceKind(event.kind)
    if kind == SourceKind.webhook:
        return await ingest_webhook_payload(session, source, event, body)
    if kind == SourceKind.email:
        return await ingest_email_body(session, source, event, body, max_part_size=max_part_size)
    try:
        payload = await parse_body(body, event.content_type, max_part_size=max_part_size)
    except AppError as exc:
        return reject(event, exc)
    data, spam = lead_input(payload, source, event)
    return await process(session, source, event, data, spam=spam)
