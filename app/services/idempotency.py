"""Idempotency-Key records: what the middleware stores and replays, and their expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.idempotency import IdempotencyRecord


async def purge_older_than(session: AsyncSession, cutoff: datetime) -> int:
    """Forget the records created before `cutoff` (every organisation); returns how many."""
    result = await session.execute(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < cutoff)
    )
    return int(getattr(result, "rowcount", 0) or 0)
