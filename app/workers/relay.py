"""The outbox relay: committed outbox rows -> arq jobs, woken by LISTEN/NOTIFY, polling every 200 ms.

Rows are claimed with FOR UPDATE SKIP LOCKED, so several relays (one per worker process) share
the work without sending a row twice at once; a row is marked dispatched only after all its jobs
are in Redis. If Redis is down, rows stay pending and are retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from redis.exceptions import RedisError
from sqlalchemy import DateTime, String, Uuid, column, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.outbox import OutboxEvent
from app.services.outbox import NOTIFY_CHANNEL
from app.state import AppState
from app.workers.registry import (
    BATCHED_JOBS,
    LEAD_ID_JOBS,
    Wanting,
    batch_job_id,
    job_id,
    jobs_for,
    queue_for,
    wanting,
)

log = structlog.get_logger("loudou.relay")

POLL_SECONDS = 0.2
# After a NOTIFY, wait this long for more commits to join the batch. Each batch costs the workers
# a fixed ~30 ms of CPU (the relay's claim, the jobs, the assignment transaction, the follow-ups)
# against ~1.4 ms a lead: at 20 ms a trickle of leads went out five at a time, and at ~120 leads/s
# next to intake on two cores that overhead queued the assignments (p99 1.2 s); at 100 ms the
# batches are about twelve leads and p99 fell to 0.4–0.6 s (README, "Benchmarks").
GATHER_SECONDS = 0.1
BATCH = 200


class RedisUnavailable(Exception):
    """Redis refused an enqueue; the batch stays pending."""


# Claim and mark in one statement: the pending rows, oldest first, locked (SKIP LOCKED: another
# relay's rows are left to it) and marked dispatched; the transaction commits only once every job
# is in Redis, so a failed enqueue rolls the mark back.
_CLAIM = text(
    """
    UPDATE outbox o SET dispatched_at = now(), attempts = o.attempts + 1
    FROM (
        SELECT org_id, id FROM outbox
        WHERE dispatched_at IS NULL AND available_at <= :now
        ORDER BY available_at, id
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ) AS pending
    WHERE o.org_id = pending.org_id AND o.id = pending.id
    RETURNING o.org_id, o.id, o.event_type, o.payload, o.available_at
    """
).columns(
    column("org_id", Uuid()),
    column("id", Uuid()),
    column("event_type", String()),
    column("payload", JSONB()),
    column("available_at", DateTime(timezone=True)),
)


@dataclass
class _Batch:
    outbox_ids: list[str] = field(default_factory=list)
    lead_ids: list[str] = field(default_factory=list)


async def relay_once(state: AppState, *, batch: int = BATCH) -> int:
    """Dispatch up to `batch` pending events; returns how many were dispatched."""
    async with state.sessions() as session:
        conn = await session.connection()
        rows = sorted(
            (await conn.execute(_CLAIM, {"now": utcnow(), "batch": batch})).all(),
            key=lambda row: (row.available_at, row.id),
        )
        if not rows:
            await session.rollback()
            return 0
        wanted = await _orgs_wanting(
            session,
            {
                check
                for row in rows
                for job in jobs_for(row.event_type)
                if (check := wanting(job, row.payload))
            },
        )
        batches: dict[tuple[str, uuid.UUID], _Batch] = defaultdict(_Batch)
        try:
            for row in rows:
                for job in jobs_for(row.event_type):
                    check = wanting(job, row.payload)
                    if check is not None and row.org_id not in wanted[check]:
                        continue  # e.g. no webhook subscription in that organisation: no job at all
                    if job in BATCHED_JOBS:
                        entry = batches[(BATCHED_JOBS[job], row.org_id)]
                        entry.outbox_ids.append(str(row.id))
                        if row.payload.get("lead_id"):
                            entry.lead_ids.append(str(row.payload["lead_id"]))
                        continue
                    await state.redis.enqueue_job(
                        job,
                        str(row.id),
                        str(row.org_id),
                        _job_id=job_id(job, str(row.id)),
                        _queue_name=queue_for(job, state.settings),
                    )
            for (job, org_id), entry in batches.items():
                # The assignment job is given its leads' ids, so it need not read the events back.
                extra: dict[str, Any] = {"lead_ids": entry.lead_ids} if job in LEAD_ID_JOBS else {}
                await state.redis.enqueue_job(
                    job,
                    entry.outbox_ids,
                    str(org_id),
                    _job_id=batch_job_id(job, entry.outbox_ids),
                    _queue_name=queue_for(job, state.settings),
                    **extra,
                )
        except (RedisError, OSError) as exc:
            await session.rollback()
            await _note_failure(state, [(r.org_id, r.id) for r in rows], exc)
            raise RedisUnavailable(str(exc)) from exc
        await session.commit()
        return len(rows)


async def _orgs_wanting(session: AsyncSession, checks: set[Wanting]) -> dict[Wanting, set[uuid.UUID]]:
    """For the batch's optional jobs, the organisations that have anything for them to do (one
    query per question the batch asks)."""
    return {check: await check(session) for check in checks}


async def _note_failure(state: AppState, keys: list[tuple[Any, Any]], exc: Exception) -> None:
    async with state.sessions() as session:
        await session.execute(
            update(OutboxEvent)
            .where(tuple_(col(OutboxEvent.org_id), col(OutboxEvent.id)).in_(keys))
            .values(attempts=col(OutboxEvent.attempts) + 1, last_error=str(exc)[:2000])
            .execution_options(cross_tenant=True)
        )
        await session.commit()


def _asyncpg_dsn(state: AppState) -> str:
    url = make_url(str(state.engine.url.render_as_string(hide_password=False)))
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


async def _listen(state: AppState, wake: asyncio.Event) -> asyncpg.Connection | None:
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(state), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("relay.listen_failed", error=str(exc))
        return None
    await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
    return conn


async def relay_forever(state: AppState, stop: asyncio.Event) -> None:
    """Run until `stop` is set: dispatch, then sleep until NOTIFY or 200 ms, whichever is first."""
    wake = asyncio.Event()
    conn = await _listen(state, wake)
    backoff = POLL_SECONDS
    try:
        while not stop.is_set():
            try:
                dispatched = await relay_once(state)
                backoff = POLL_SECONDS
            except RedisUnavailable as exc:
                log.warning("relay.redis_unavailable", error=str(exc), retry_in=backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception as exc:  # the database may be restarting: keep the relay alive
                log.warning("relay.error", error=str(exc), retry_in=backoff)
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if dispatched >= BATCH:
                continue
            if conn is None or conn.is_closed():
                conn = await _listen(state, wake)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=POLL_SECONDS)
            if wake.is_set():
                # Woken by a commit: let the commits of the next few milliseconds join this batch
                # (every process's relay wakes on each NOTIFY; one batch per wake is fewer jobs).
                await _sleep(stop, GATHER_SECONDS)
            wake.clear()
    finally:
        if conn is not None and not conn.is_closed():
            await conn.close()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
