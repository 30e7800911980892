"""Receivables: the order an accepted quote becomes, with its payment plan (回款计划).

Orders inherit their deal's visibility (see app.services.deals.service). Payments and dunning come later.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import NotFound
from app.models.deal import Deal
from app.models.quote import PaymentTerm, Quote
from app.models.receivable import Installment, InstallmentRead, Order, OrderRead
from app.money import percent_of
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.deals.service import visibility_clause


async def next_number(session: AsyncSession, org_id: uuid.UUID, kind: str, year: int) -> int:
    """The next gap-free number of `kind` for the organisation and year.

    The counter row stays locked (the upsert's row lock) until the transaction ends, so concurrent
    creations queue on it, and a rolled-back creation gives its number back. A SEQUENCE would not.
    """
    result = await session.execute(
        text(
            "INSERT INTO document_counters (id, org_id, kind, year, last_value) "
            "VALUES (gen_random_uuid(), :org, :kind, :year, 1) "
            "ON CONFLICT (org_id, kind, year) "
            "DO UPDATE SET last_value = document_counters.last_value + 1 "
            "RETURNING last_value"
        ),
        {"org": org_id, "kind": kind, "year": year},
    )
    return int(result.scalar_one())


def plan(
    total: Decimal, currency: str, terms: list[PaymentTerm], start: date
) -> list[tuple[Decimal, Decimal, date]]:
    """(percent, amount, due date) per term; amounts are rounded half-up and the last takes the remainder."""
    rows: list[tuple[Decimal, Decimal, date]] = []
    allotted = Decimal(0)
    for index, term in enumerate(terms):
        if index == len(terms) - 1:
            amount = total - allotted
        else:
            amount = percent_of(total, term.percent, currency)
            allotted += amount
        due = start if term.due == "on_acceptance" else start + timedelta(days=term.due_days or 0)
        rows.append((term.percent, amount, due))
    return rows


async def create_order_from_quote(
    session: AsyncSession, principal: Principal | None, quote: Quote, deal: Deal, *, accepted_on: date
) -> Order:
    """The order for an accepted quote, with installments that sum exactly to the quote's total."""
    number = await next_number(session, deal.org_id, "order", accepted_on.year)
    order = Order(
        number=f"SO-{accepted_on.year}-{number:04d}",
        deal_id=deal.id,
        quote_id=quote.id,
        account_id=deal.account_id,
        owner_id=deal.owner_id,
        currency=quote.currency,
        total=quote.total,
    )
    session.add(order)
    await session.flush()
    terms = [PaymentTerm.model_validate(t) for t in quote.payment_terms]
    for sequence, (percent, amount, due) in enumerate(
        plan(quote.total, quote.currency, terms, accepted_on), 1
    ):
        session.add(
            Installment(
                order_id=order.id,
                sequence=sequence,
                percent=percent,
                due_date=due,
                amount=amount,
                currency=quote.currency,
            )
        )
    audit.record(
        session,
        actor=principal,
        entity="order",
        entity_id=order.id,
        action="create",
        changes={"quote_id": [None, str(quote.id)], "total": [None, str(quote.total)]},
        org_id=deal.org_id,
    )
    await session.flush()
    return order


async def installments_of(session: AsyncSession, order_id: uuid.UUID) -> list[Installment]:
    """An order's installments in sequence."""
    stmt = (
        select(Installment).where(col(Installment.order_id) == order_id).order_by(col(Installment.sequence))
    )
    return list((await session.execute(stmt)).scalars())


def read_model(order: Order, installments: list[Installment]) -> OrderRead:
    """An order with its payment plan as the API shows it."""
    data: dict[str, Any] = order.model_dump(warnings=False)
    data["installments"] = [InstallmentRead.model_validate(i) for i in installments]
    return OrderRead.model_validate(data)


def _visible_orders(principal: Principal) -> Any:
    return (
        select(Order)
        .join(Deal, (col(Deal.org_id) == col(Order.org_id)) & (col(Deal.id) == col(Order.deal_id)))
        .where(visibility_clause(principal))
    )


async def get_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> tuple[Order, list[Installment]]:
    """An order whose deal the caller may see, with its installments."""
    order = (
        await session.execute(_visible_orders(principal).where(col(Order.id) == order_id))
    ).scalar_one_or_none()
    if order is None:
        raise NotFound(f"No order with id {order_id}.")
    return order, await installments_of(session, order.id)


async def list_orders(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    deal_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
) -> tuple[list[tuple[Order, list[Installment]]], str | None]:
    """Orders the caller may see, newest first, each with its installments."""
    stmt = _visible_orders(principal)
    if deal_id is not None:
        stmt = stmt.where(col(Order.deal_id) == deal_id)
    if account_id is not None:
        stmt = stmt.where(col(Order.account_id) == account_id)
    rows, next_cursor = await paginate(
        session,
        stmt,
        page,
        id_column=Order.id,
        sortable={"created_at": Order.created_at, "ordered_at": Order.ordered_at},
    )
    return [(o, await installments_of(session, o.id)) for o in rows], next_cursor
