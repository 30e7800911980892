"""The collections sweep: what the cron does for each organisation as of its local today."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.receivable import Installment
from app.services.receivables import dunning, ledger, risks


async def organisations_with_receivables(session: AsyncSession) -> list[uuid.UUID]:
    """Organisations with an unsettled installment, in id order (every sweep locks in one order)."""
    rows = await session.execute(
        select(col(Installment.org_id))
        .where(col(Installment.status).not_in(ledger.SETTLED))
        .distinct()
        .order_by(col(Installment.org_id))
        .execution_options(cross_tenant=True)
    )
    return list(rows.scalars())


async def daily(session: AsyncSession, org_id: uuid.UUID, *, smtp: bool) -> None:
    """Overdue statuses, dunning, ratings and risks as of the organisation's local today;
    idempotent (status guards, the dunning log's key, the risks' key), safe on several workers."""
    today = await ledger.org_today(session, org_id)
    await ledger.mark_overdue(session, org_id, today)
    await dunning.run(session, org_id, as_of=today, smtp=smtp)
    await risks.raise_risks(session, org_id, today=today)
