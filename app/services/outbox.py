"""The transactional outbox: `emit` writes an event in the caller's transaction.

The relay (app.workers.relay) turns committed events into arq jobs; a rolled-back transaction
takes its events with it, and an event committed while Redis is down waits in the table.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.outbox import JobRun, OutboxEvent
from app.services.common import get_or_404

NOTIFY_CHANNEL = "loudou_outbox"


async def emit(
    session: AsyncSession,
    event_type: str,
    payload: dict[str, Any],
    *,
    org_id: uuid.UUID | None = None,
    available_at: datetime | None = None,
) -> OutboxEvent:
    """Write an outbox event in the current transaction and wake the relay when it commits."""
    event = OutboxEvent(
        event_type=event_type,
        payload=jsonable_encoder(payload),
        available_at=available_at or utcnow(),
    )
    if org_id is not None:
        event.org_id = org_id
    session.add(event)
    # NOTIFY is transactional: listeners hear it only if and when this transaction commits.
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return event


async def status(session: AsyncSession, event_id: uuid.UUID) -> tuple[OutboxEvent, list[JobRun]]:
    """An outbox event of the caller's organisation and the runs of the jobs it became."""
    event = await get_or_404(session, OutboxEvent, event_id, what="outbox event")
    runs = list((await session.execute(select(JobRun).where(col(JobRun.outbox_id) == event.id))).scalars())
    return event, runs
