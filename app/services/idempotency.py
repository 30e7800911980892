"""Idempotency-Key records: the claim a POST takes on its key, the answer kept for replay, and
their expiry. The middleware (app.middleware.IdempotencyMiddleware) speaks HTTP and commits;
the rows are handled here."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.idempotency import IdempotencyRecord

# How long a claim holds before another request with the key may take over (the first died).
IN_PROGRESS_LEASE = timedelta(seconds=60)


class Claim(enum.Enum):
    """What claiming a key found."""

    claimed = "claimed"  # go ahead (a new key, or one whose first request died)
    reused = "reused"  # the key belongs to another request
    replay = "replay"  # answered before: replay the stored response
    in_progress = "in_progress"  # the first request is still running


async def claim(
    session: AsyncSession, *, caller_hash: str, key: str, method: str, path: str, request_hash: str
) -> tuple[Claim, IdempotencyRecord | None]:
    """Claim `key` for this caller's request, or say what the earlier request with it left (its
    record, locked, for a replay). The caller commits a `claimed` and rolls back the rest."""
    now = utcnow()
    claimed = (
        await session.execute(
            insert(IdempotencyRecord)
            .values(
                id=uuid.uuid4(),
                caller_hash=caller_hash,
                key=key,
                method=method,
                path=path,
                request_hash=request_hash,
                response_headers=[],
                created_at=now,
                locked_until=now + IN_PROGRESS_LEASE,
            )
            .on_conflict_do_nothing(index_elements=["caller_hash", "key"])
            .returning(col(IdempotencyRecord.id))
        )
    ).scalar_one_or_none()
    if claimed is not None:
        return Claim.claimed, None
    record = (
        await session.execute(
            select(IdempotencyRecord)
            .where(col(IdempotencyRecord.caller_hash) == caller_hash, col(IdempotencyRecord.key) == key)
            .with_for_update()
        )
    ).scalar_one()
    if record.request_hash != request_hash:
        return Claim.reused, record
    if record.response_status is not None:
        return Claim.replay, record
    if record.locked_until is not None and record.locked_until > now:
        return Claim.in_progress, record
    # The first attempt died without an answer: this one takes over.
    record.locked_until = now + IN_PROGRESS_LEASE
    return Claim.claimed, record


async def finish(
    session: AsyncSession,
    *,
    caller_hash: str,
    key: str,
    status: int,
    headers: list[Any],
    body: bytes,
    org_id: uuid.UUID | None,
) -> None:
    """Keep a successful answer (status < 400) for replay; after a failure forget the key, so the
    request can be corrected and retried under it."""
    where = (col(IdempotencyRecord.caller_hash) == caller_hash, col(IdempotencyRecord.key) == key)
    if status < 400:
        await session.execute(
            update(IdempotencyRecord)
            .where(*where)
            .values(
                response_status=status,
                response_headers=headers,
                response_body=body,
                locked_until=None,
                org_id=org_id,
            )
        )
    else:
        await session.execute(delete(IdempotencyRecord).where(*where))


async def purge_older_than(session: AsyncSession, cutoff: datetime) -> int:
    """Forget the records created before `cutoff` (every organisation); returns how many."""
    result = await session.execute(
        delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < cutoff)
    )
    return int(getattr(result, "rowcount", 0) or 0)
