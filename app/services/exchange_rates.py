"""The organisation's dated exchange rates (what `convert_to` in metrics uses).

A rate (date, from, to, rate) means 1 `from` = `rate` `to` from that local date until the next
dated rate of the pair. Posting a pair and date again replaces its rate. Admins write; every
member reads.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Forbidden, NotFound
from app.models.metrics import ExchangeRate, ExchangeRateCreate
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit


async def _get(session: AsyncSession, rate_id: uuid.UUID) -> ExchangeRate:
    # The primary key is (org_id, id); the session's organisation scope supplies org_id.
    rate = (
        await session.execute(select(ExchangeRate).where(col(ExchangeRate.id) == rate_id))
    ).scalar_one_or_none()
    if rate is None:
        raise NotFound(f"No exchange rate with id {rate_id}.")
    return rate


async def put_rate(session: AsyncSession, principal: Principal, data: ExchangeRateCreate) -> ExchangeRate:
    """Create or replace the rate of a pair on a date (admins)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin sets exchange rates.")
    stmt = (
        insert(ExchangeRate)
        .values(
            org_id=principal.org_id,
            id=uuid.uuid4(),
            date=data.date,
            from_currency=data.from_currency,
            to_currency=data.to_currency,
            rate=data.rate,
        )
        .on_conflict_do_update(
            index_elements=["org_id", "from_currency", "to_currency", "date"], set_={"rate": data.rate}
        )
        .returning(col(ExchangeRate.id))
    )
    rate_id = (await session.execute(stmt)).scalar_one()
    rate = await _get(session, rate_id)
    await session.refresh(rate)
    audit.record(
        session,
        actor=principal,
        entity="exchange_rate",
        entity_id=rate.id,
        action="put",
        changes={
            "date": [None, data.date.isoformat()],
            "pair": [None, f"{data.from_currency}->{data.to_currency}"],
            "rate": [None, str(data.rate)],
        },
    )
    return rate


async def list_rates(
    session: AsyncSession,
    page: PageParams,
    *,
    from_currency: str | None = None,
    to_currency: str | None = None,
    on_or_before: date | None = None,
) -> tuple[list[ExchangeRate], str | None]:
    """Rates, newest date first by default."""
    stmt = select(ExchangeRate)
    if from_currency:
        stmt = stmt.where(col(ExchangeRate.from_currency) == from_currency)
    if to_currency:
        stmt = stmt.where(col(ExchangeRate.to_currency) == to_currency)
    if on_or_before:
        stmt = stmt.where(col(ExchangeRate.date) <= on_or_before)
    return await paginate(
        session,
        stmt,
        page,
        id_column=col(ExchangeRate.id),
        sortable={"date": col(ExchangeRate.date)},
        default_sort="-date",
    )


async def delete_rate(session: AsyncSession, principal: Principal, rate_id: uuid.UUID) -> None:
    """Remove a rate (admins)."""
    if not principal.is_admin:
        raise Forbidden("Only an admin removes exchange rates.")
    rate = await _get(session, rate_id)
    audit.record(
        session,
        actor=principal,
        entity="exchange_rate",
        entity_id=rate.id,
        action="delete",
        changes={
            "pair": [f"{rate.from_currency}->{rate.to_currency}", None],
            "date": [rate.date.isoformat(), None],
        },
    )
    await session.delete(rate)
    await session.flush()
