"""Job functions. Thin: reload state by id, call a service, commit. Each may run twice."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import select
from sqlmodel import col

from app.models.outbox import OutboxEvent
from app.services.jobs import record_run
from app.state import AppState

log = structlog.get_logger("loudou.jobs")


async def load_event(state: AppState, outbox_id: str, org_id: str | None = None) -> OutboxEvent | None:
    """The outbox event a job was enqueued for (None if it was deleted meanwhile).

    The relay passes the event's organisation with its id: the look-up is then one probe of the
    outbox's primary key (org_id, id), and one shard on Citus. Jobs enqueued before jobs carried
    it (org_id None) are still found, by id alone (a scan)."""
    stmt = select(OutboxEvent).where(col(OutboxEvent.id) == uuid.UUID(outbox_id))
    if org_id is not None:
        stmt = stmt.where(col(OutboxEvent.org_id) == uuid.UUID(org_id))
    async with state.sessions() as session:
        return (await session.execute(stmt.execution_options(cross_tenant=True))).scalar_one_or_none()


async def ping(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> int:
    """Diagnostic job: counts its runs in job_runs, so tests can prove a job ran exactly once."""
    state: AppState = ctx["state"]
    event = await load_event(state, outbox_id, org_id)
    if event is None:
        return 0
    async with state.sessions() as session:
        session.info["org_id"] = event.org_id
        runs = await record_run(
            session,
            job_key=f"ping:{outbox_id}",
            job_name="ping",
            org_id=event.org_id,
            outbox_id=event.id,
        )
        await session.commit()
    log.info("job.ping", outbox_id=outbox_id, runs=runs)
    return runs
