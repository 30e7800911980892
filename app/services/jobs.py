"""Book-keeping shared by jobs: a per-job-key run counter, written in the job's transaction."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.base import utcnow
from app.models.outbox import JobRun


async def record_run(
    session: AsyncSession,
    *,
    job_key: str,
    job_name: str,
    org_id: uuid.UUID,
    outbox_id: uuid.UUID | None = None,
) -> int:
    """Count one run of `job_key`; returns how many times it has run, this one included."""
    now = utcnow()
    table = JobRun.__table__  # type: ignore[attr-defined]
    stmt = insert(JobRun).values(
        job_key=job_key,
        job_name=job_name,
        org_id=org_id,
        outbox_id=outbox_id,
        runs=1,
        first_run_at=now,
        last_run_at=now,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=["org_id", "job_key"],
        set_={"runs": table.c.runs + 1, "last_run_at": now},
    ).returning(table.c.runs)
    return int((await session.execute(upsert)).scalar_one())
