"""Orders (合同/销售订单) and their payment plans (回款计划): from an accepted quote, or entered
directly for an account; cancel, reschedule or split an installment, promise to pay.
Who sees which orders: app.services.receivables.access; installments: .installments.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Forbidden, InvalidTransition, NotFound
from app.models.base import utcnow
from app.models.deal import Deal
from app.models.quote import PaymentTerm, Quote
from app.models.receivable import (
    Installment,
    InstallmentStatus,
    Order,
    OrderCancel,
    OrderCreate,
    OrderRead,
    OrderStatus,
)
from app.models.user import User
from app.money import HUNDRED, percent_of, round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import next_number
from app.services.deals.service import visibility_clause
from app.services.pricing import MAX_AMOUNT, compute, line_json, resolve_lines
from app.services.receivables import ledger
from app.services.receivables.access import invalid, order_clause, visible_account
from app.services.receivables.installments import installment_read, lock_installments


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
        ordered_at=utcnow(),
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
    data["installments"] = [installment_read(i) for i in installments]
    return OrderRead.model_validate(data)


async def get_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, *, lock: bool = False
) -> tuple[Order, list[Installment]]:
    """An order the caller may see, with its installments."""
    stmt = select(Order).where(col(Order.id) == order_id, order_clause(principal))
    if lock:
        stmt = stmt.with_for_update(of=Order)
    order = (await session.execute(stmt)).scalar_one_or_none()
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
    status: OrderStatus | None = None,
) -> tuple[list[tuple[Order, list[Installment]]], str | None]:
    """Orders the caller may see, newest first, each with its installments."""
    stmt = select(Order).where(order_clause(principal))
    if deal_id is not None:
        stmt = stmt.where(col(Order.deal_id) == deal_id)
    if account_id is not None:
        stmt = stmt.where(col(Order.account_id) == account_id)
    if status is not None:
        stmt = stmt.where(col(Order.status) == status)
    rows, next_cursor = await paginate(
        session,
        stmt,
        page,
        id_column=Order.id,
        sortable={"created_at": Order.created_at, "ordered_at": Order.ordered_at},
    )
    return [(o, await installments_of(session, o.id)) for o in rows], next_cursor


def _check_write(principal: Principal) -> None:
    if not principal.allows("orders:write"):
        raise Forbidden("This credential may not change orders.")


async def create_order(session: AsyncSession, principal: Principal, data: OrderCreate) -> Order:
    """An order entered directly for an account: lines priced with the quote arithmetic, terms
    as percent + days after the order date or explicit dates; `ordered_at` may lie in the past."""
    _check_write(principal)
    account = await visible_account(session, principal, data.account_id)
    settings = await ledger.settings_of(session, principal.org_id)
    today = ledger.local_today(settings)
    ordered_on = data.ordered_at or today
    if ordered_on > today:
        raise invalid("ordered_at", "in_future", "an order date cannot lie in the future")
    if sum((t.percent for t in data.payment_terms), Decimal(0)) != HUNDRED:
        raise invalid("payment_terms", "must_sum_to_100", "the payment terms' percents must add up to 100")
    for index, term in enumerate(data.payment_terms):
        if term.due_date is not None and term.due_date < ordered_on:
            raise invalid(f"payment_terms.{index}.due_date", "before_order", "due before the order date")
    deal_id = None
    if data.deal_id is not None:
        deal = (
            await session.execute(
                select(Deal).where(col(Deal.id) == data.deal_id, visibility_clause(principal))
            )
        ).scalar_one_or_none()
        if deal is None:
            raise invalid("deal_id", "not_found", "no such deal")
        deal_id = deal.id
    owner_id = data.owner_id or account.owner_id or principal.user_id
    if data.owner_id is not None and await session.get(User, data.owner_id) is None:
        raise invalid("owner_id", "not_found", "no such user")
    resolved = await resolve_lines(session, data.lines, data.currency)
    totals = compute(
        resolved,
        currency=data.currency,
        discount_percent=data.discount_percent,
        tax_inclusive=data.tax_inclusive,
    )
    if totals.total <= 0:
        raise invalid("lines", "zero_total", "an order needs a total above zero")
    if totals.total >= MAX_AMOUNT:
        raise invalid("lines", "amount_too_large", f"order amounts must stay below {MAX_AMOUNT:,}")
    number = await next_number(session, principal.org_id, "order", ordered_on.year)
    order = Order(
        number=f"SO-{ordered_on.year}-{number:04d}",
        account_id=account.id,
        deal_id=deal_id,
        owner_id=owner_id,
        currency=data.currency,
        total=totals.total,
        ordered_at=ledger.start_of_day(settings, ordered_on),
        lines=[line_json(i + 1, r) for i, r in enumerate(totals.lines)],
        created_by_id=principal.user_id,
    )
    session.add(order)
    await session.flush()
    allotted = Decimal(0)
    overdue: list[Installment] = []
    for sequence, term in enumerate(data.payment_terms, 1):
        if sequence == len(data.payment_terms):
            amount = totals.total - allotted
        else:
            amount = percent_of(totals.total, term.percent, data.currency)
            allotted += amount
        due = term.due_date or ordered_on + timedelta(days=term.due_days or 0)
        inst = Installment(
            order_id=order.id,
            sequence=sequence,
            percent=term.percent,
            due_date=due,
            amount=amount,
            currency=data.currency,
        )
        inst.status = ledger.status_for(inst, today)
        session.add(inst)
        overdue.append(inst)
    await session.flush()
    for inst in overdue:
        if inst.status == InstallmentStatus.overdue:  # a running contract entered late
            await ledger.emit_status(session, inst, InstallmentStatus.overdue, org_id=principal.org_id)
    audit.record(
        session,
        actor=principal,
        entity="order",
        entity_id=order.id,
        action="create",
        changes={
            "account_id": [None, str(account.id)],
            "total": [None, str(totals.total)],
            "ordered_on": [None, ordered_on.isoformat()],
        },
    )
    await session.flush()
    return order


async def cancel_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, data: OrderCancel
) -> Order:
    """Cancel an order: what is still open of each installment is written off as of
    `effective_on` (default today); paid parts stay paid."""
    _check_write(principal)
    order, installments = await get_order(session, principal, order_id, lock=True)
    if order.status == OrderStatus.cancelled:
        raise InvalidTransition("The order is already cancelled.")
    today = await ledger.org_today(session, principal.org_id)
    effective = data.effective_on or today
    if effective < ledger.local_date(await ledger.settings_of(session, principal.org_id), order.ordered_at):
        raise invalid("effective_on", "before_order", "a cancellation cannot precede the order date")
    written_off: dict[str, str] = {}
    for inst in await lock_installments(session, [i.id for i in installments]):
        remaining = ledger.open_amount(inst)
        if remaining > 0:
            inst.written_off_amount = remaining
            inst.written_off_on = effective
            inst.status = InstallmentStatus.written_off
            inst.version += 1
            inst.updated_at = utcnow()
            written_off[str(inst.id)] = str(round_money(remaining, inst.currency))
    order.status = OrderStatus.cancelled
    order.cancelled_on = effective
    order.cancel_reason = data.reason
    order.version += 1
    order.updated_at = utcnow()
    audit.record(
        session,
        actor=principal,
        entity="order",
        entity_id=order.id,
        action="cancel",
        changes={
            "status": ["open", "cancelled"],
            "effective_on": [None, effective.isoformat()],
            "reason": [None, data.reason],
            "written_off": [None, written_off],
        },
    )
    await session.flush()
    return order
