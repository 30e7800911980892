"""Job functions. Thin: open a `job_session`, call one service, let the session commit. Each may
run twice; services load and lock their rows by id and raise NotFound when one is gone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import scope_session
from app.models.outbox import OutboxEvent
from app.services import outbox
from app.services.jobs import record_run
from app.state import AppState

log = structlog.get_logger("loudou.jobs")


@asynccontextmanager
async def job_session(ctx: dict[str, Any], org_id: uuid.UUID | None) -> AsyncIterator[AsyncSession]:
    """A session for one unit of a job's work, bound to `org_id` (None: unbound, for the queries
    marked cross-tenant); committed when the block ends, rolled back when it raises."""
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        if org_id is not None:
            scope_session(session, org_id)
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


async def load_event(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> OutboxEvent | None:
    """The outbox event a job was enqueued for (None if it was deleted meanwhile).

    The relay passes the event's organisation with its id: the look-up is then one probe of the
    outbox's primary key (org_id, id), and one shard on Citus. Jobs enqueued before jobs carried
    it (org_id None) are still found, by id alone (a scan)."""
    async with job_session(ctx, None) as session:
        return await outbox.get_event(
            session, uuid.UUID(outbox_id), org_id=uuid.UUID(org_id) if org_id is not None else None
        )


async def load_events(ctx: dict[str, Any], outbox_ids: list[str], org_id: str) -> list[OutboxEvent]:
    """The outbox events a batched job was enqueued for (one organisation's), oldest first."""
    async with job_session(ctx, None) as session:
        return await outbox.get_events(session, [uuid.UUID(i) for i in outbox_ids], org_id=uuid.UUID(org_id))


async def ping(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> int:
    """Diagnostic job: counts its runs in job_runs, so tests can prove a job ran exactly once."""
    event = await load_event(ctx, outbox_id, org_id)
    if event is None:
        return 0
    async with job_session(ctx, event.org_id) as session:
        runs = await record_run(
            session, job_key=f"ping:{outbox_id}", job_name="ping", org_id=event.org_id, outbox_id=event.id
        )
    log.info("job.ping", outbox_id=outbox_id, runs=runs)
    return runs
