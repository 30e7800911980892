"""Periodic jobs (arq cron): the outbox relay's safety net and housekeeping."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlmodel import col

from app.db import tenant_session
from app.models.base import utcnow
from app.models.idempotency import IdempotencyRecord
from app.models.organisation import Organisation
from app.services.metrics import snapshots
from app.services.quotes import workflow as quote_workflow
from app.state import AppState
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
    async with state.sessions() as session:
        result = await session.execute(
            delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < cutoff)
        )
        await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


async def expire_quotes(ctx: dict[str, Any]) -> int:
    """Expire sent quotes past their valid_until (UTC date); safe on several workers at once."""
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        count = await quote_workflow.expire_due(session, utcnow().date())
        await session.commit()
    return count


async def snapshot_pipelines(ctx: dict[str, Any]) -> int:
    """Take each organisation's missing daily pipeline snapshots (yesterday and the week before).

    Safe on several workers at once: a day is rewritten whole (delete + insert) in one transaction,
    and a transaction-scoped advisory lock per organisation makes a second worker skip it.
    """
    state: AppState = ctx["state"]
    async with state.sessions() as session:
        org_ids = list((await session.execute(select(col(Organisation.id)))).scalars())
    taken = 0
    for org_id in org_ids:
        async with tenant_session(state.sessions, org_id) as session:
            locked = (
                await session.execute(
                    text("SELECT pg_try_advisory_xact_lock(hashtext('loudou:snapshots:' || :org))"),
                    {"org": str(org_id)},
                )
            ).scalar()
            if not locked:
                continue
            taken += await snapshots.snapshot_missing_days(session, org_id)
            await session.commit()
    return taken
