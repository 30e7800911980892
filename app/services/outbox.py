"""The transactional outbox: `emit` writes an event in the caller's transaction.

The relay (app.workers.relay) turns committed events into arq jobs; a rolled-back transaction
takes its events with it, and an event committed while Redis is down waits in the table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import build, column_values, utcnow
from app.models.events import EventData
from app.models.outbox import JobRun, OutboxEvent
from app.services.common import get_or_404

NOTIFY_CHANNEL = "loudou_outbox"
# A transaction that has sent NOTIFY takes a database-wide lock when it commits, so under load a
# NOTIFY per event serialises every writer's commit (and its WAL flush). One NOTIFY per process
# per interval is enough: a woken relay drains every committed event, and what a skipped NOTIFY
# would have announced is found by the next wake-up or by the relay's 200 ms poll.
NOTIFY_INTERVAL = 0.05
_last_notify = -NOTIFY_INTERVAL
_clock = time.monotonic


def notify_due() -> bool:
    """Whether this outbox write should NOTIFY the relay (no NOTIFY in the last interval)."""
    global _last_notify
    now = _clock()
    if now - _last_notify < NOTIFY_INTERVAL:
        return False
    _last_notify = now
    return True


async def emit(
    session: AsyncSession,
    data: EventData,
    *,
    org_id: uuid.UUID | None = None,
    available_at: datetime | None = None,
) -> OutboxEvent:
    """Write an outbox event (its type from the payload's class) in the current transaction and
    wake the relay when it commits."""
    event = build(
        OutboxEvent,
        event_type=data.event_type,
        payload=data.payload(),
        available_at=available_at or utcnow(),
    )
    if org_id is not None:
        event.org_id = org_id
    session.add(event)
    if notify_due():
        # NOTIFY is transactional: listeners hear it only if and when this transaction commits.
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return event


_OUTBOX: Table = OutboxEvent.__table__  # type: ignore[attr-defined]


async def emit_many(session: AsyncSession, org_id: uuid.UUID, events: Sequence[EventData]) -> None:
    """`emit` for many events of one organisation: one INSERT in the session's transaction (not
    through the unit of work), and the relay woken as `emit` wakes it."""
    if not events:
        return
    now = utcnow()
    rows = []
    for data in events:
        row = column_values(
            OutboxEvent, {"event_type": data.event_type, "payload": data.payload(), "available_at": now}
        )
        row["org_id"] = org_id
        rows.append(row)
    conn = await session.connection()
    await conn.execute(insert(_OUTBOX), rows)
    if notify_due():
        await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


async def get_event(
    session: AsyncSession, event_id: uuid.UUID, *, org_id: uuid.UUID | None = None
) -> OutboxEvent | None:
    """An outbox event of any organisation, for the job it became (None if it was deleted); with
    its `org_id`, one probe of the primary key (org_id, id)."""
    stmt = select(OutboxEvent).where(col(OutboxEvent.id) == event_id)
    if org_id is not None:
        stmt = stmt.where(col(OutboxEvent.org_id) == org_id)
    return (await session.execute(stmt.execution_options(cross_tenant=True))).scalar_one_or_none()


async def get_events(
    session: AsyncSession, event_ids: Sequence[uuid.UUID], *, org_id: uuid.UUID
) -> list[OutboxEvent]:
    """The outbox events of one organisation with these ids (those deleted meanwhile are
    missing), oldest first: what a batched job was enqueued for."""
    stmt = (
        select(OutboxEvent)
        .where(col(OutboxEvent.org_id) == org_id, col(OutboxEvent.id).in_(event_ids))
        .order_by(col(OutboxEvent.created_at), col(OutboxEvent.id))
    )
    return list((await session.execute(stmt.execution_options(cross_tenant=True))).scalars())


async def status(session: AsyncSession, event_id: uuid.UUID) -> tuple[OutboxEvent, list[JobRun]]:
    """An outbox event of the caller's organisation and the runs of the jobs it became."""
    event = await get_or_404(session, OutboxEvent, event_id, what="outbox event")
    runs = list((await session.execute(select(JobRun).where(col(JobRun.outbox_id) == event.id))).scalars())
    return event, runs
