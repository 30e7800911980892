"""Periodic jobs (arq cron): the outbox relay's safety net and housekeeping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.models.base import utcnow
from app.services import idempotency
from app.services.metrics import snapshots
from app.services.quotes import workflow as quote_workflow
from app.state import AppState
from app.workers.jobs import job_session
from app.workers.relay import RedisUnavailable, relay_once


async def relay_sweep(ctx: dict[str, Any]) -> int:
    """Dispatch whatever the relay loop has not (it normally has)."""
    state: AppState = ctx["state"]
    try:
        return await relay_once(state)
    except RedisUnavailable:
        return 0


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Forget Idempotency-Key records older than the TTL."""
    state: AppState = ctx["state"]
    cutoff = utcnow() - timedelta(hours=state.settings.idempotency_ttl_hours)
    async with job_session(ctx, None) as session:
        return await idempotency.purge_older_than(session, cutoff)


async def expire_quotes(ctx: dict[str, Any]) -> int:
    """Expire sent quotes past their valid_until (each organisation's local date); safe on several
    workers at once."""
    async with job_session(ctx, None) as session:
        return await quote_workflow.expire_due(session)


async def snapshot_pipelines(ctx: dict[str, Any]) -> int:
    """Take each organisation's missing daily pipeline snapshots (yesterday and the week before);
    one transaction per organisation, which a second worker skips (advisory lock)."""
    async with job_session(ctx, None) as session:
        org_ids = await snapshots.organisation_ids(session)
    taken = 0
    for org_id in org_ids:
        async with job_session(ctx, org_id) as session:
            taken += await snapshots.snapshot_missing_days(session, org_id)
    return taken
