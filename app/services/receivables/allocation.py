"""Allocation (核销): which installments a payment's money goes to, in which currency, and the
allocation rows that record it (see app.services.receivables.payments for the rules)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict
from app.models.payment import (
    Payment,
    PaymentAllocation,
)
from app.models.receivable import Installment, Order, OrderStatus
from app.money import round_money
from app.security import Principal
from app.services.receivables import ledger
from app.services.receivables.access import invalid

ZERO = Decimal(0)


async def account_installment(
    session: AsyncSession, installment_id: uuid.UUID, account_id: uuid.UUID, field: str
) -> Installment:
    """An installment of the account's open orders, else 422 (another organisation's included)."""
    inst = (
        await session.execute(
            select(Installment)
            .join(Order, col(Order.id) == col(Installment.order_id))
            .where(col(Installment.id) == installment_id, col(Order.account_id) == account_id)
        )
    ).scalar_one_or_none()
    if inst is None:
        raise invalid(field, "not_found", "no installment of this account with that id")
    return inst


def rate_for(payment_currency: str, inst: Installment, rate: Decimal | None, field: str) -> Decimal | None:
    """The exchange rate an allocation uses: none for the same currency, else required."""
    if inst.currency == payment_currency:
        return None
    if rate is None:
        raise invalid(
            field,
            "exchange_rate_required",
            f"the installment is in {inst.currency}, the payment in {payment_currency}: give exchange_rate",
        )
    return rate


def applied_amount(amount: Decimal, rate: Decimal | None, currency: str) -> Decimal:
    """An amount of the payment's currency in the installment's, rounded half-up."""
    return amount if rate is None else round_money(amount * rate, currency)


async def auto_targets(
    session: AsyncSession, account_id: uuid.UUID, currency: str, rate: Decimal | None, *, lock: bool = False
) -> tuple[list[Installment], Decimal | None]:
    """The account's open installments to allocate to, oldest due first: those in the payment's
    currency; with an exchange rate, those in the one other currency the account owes in."""
    stmt = (
        select(Installment)
        .join(Order, col(Order.id) == col(Installment.order_id))
        .where(
            col(Order.account_id) == account_id,
            col(Order.status) != OrderStatus.cancelled,
            col(Installment.status).not_in(ledger.SETTLED),
        )
        .order_by(
            col(Installment.due_date), col(Order.ordered_at), col(Installment.sequence), col(Installment.id)
        )
    )
    if lock:
        stmt = stmt.with_for_update(of=Installment).execution_options(populate_existing=True)
    rows = [i for i in (await session.execute(stmt)).scalars() if ledger.open_amount(i) > 0]
    if rate is None:
        same = [i for i in rows if i.currency == currency]
        others = {i.currency for i in rows if i.currency != currency}
        if not same and others:
            raise invalid(
                "exchange_rate",
                "exchange_rate_required",
                f"the account owes in {', '.join(sorted(others))}, not {currency}: give exchange_rate",
            )
        return same, None
    others = {i.currency for i in rows if i.currency != currency}
    if len(others) > 1:
        raise invalid(
            "exchange_rate", "ambiguous", "the account owes in several other currencies: name the allocations"
        )
    return [i for i in rows if i.currency != currency], rate


@dataclass
class Want:
    """Money wanted for an installment, at an exchange rate (None: same currency)."""

    installment: Installment
    amount: Decimal | None  # in the payment's currency; None = as much as is open
    rate: Decimal | None


async def allocate(
    session: AsyncSession,
    principal: Principal,
    payment: Payment,
    wants: list[Want],
    available: Decimal,
    *,
    source: str,
    strict: bool,
) -> list[PaymentAllocation]:
    """Allocate up to `available` of the payment to the wanted installments, in order.
    `strict`: a named amount above the installment's open amount is a 409, not a cap."""
    made: list[PaymentAllocation] = []
    for want in wants:
        if available <= 0:
            break
        inst = want.installment
        open_now = ledger.open_amount(inst)
        if open_now <= 0:
            if strict:
                raise Conflict(f"Installment {inst.id} has nothing open any more.")
            continue
        if want.amount is not None:
            amount = min(want.amount, available)
            applied = applied_amount(amount, want.rate, inst.currency)
            if applied > open_now:
                if strict:
                    raise Conflict(f"Installment {inst.id} has only {open_now} {inst.currency} open now.")
                applied = open_now
                amount = payment_amount_for(applied, want.rate, payment.currency)
        else:
            can = applied_amount(available, want.rate, inst.currency)
            if can <= open_now:
                amount, applied = available, can
            else:
                applied = open_now
                amount = payment_amount_for(open_now, want.rate, payment.currency)
        if amount <= 0 or applied <= 0:
            continue
        alloc = PaymentAllocation(
            payment_id=payment.id,
            installment_id=inst.id,
            amount=amount,
            applied_amount=applied,
            applied_currency=inst.currency,
            exchange_rate=want.rate,
            source=source,
            created_by_id=principal.user_id,
        )
        alloc.org_id = payment.org_id
        session.add(alloc)
        made.append(alloc)
        available -= amount
        inst.paid_amount = Decimal(inst.paid_amount) + applied  # refreshed from the rows below
    await session.flush()
    return made


def payment_amount_for(applied: Decimal, rate: Decimal | None, currency: str) -> Decimal:
    """The payment-currency amount behind an applied amount."""
    return applied if rate is None else round_money(applied / rate, currency)


async def lock(ids: list[uuid.UUID], session: AsyncSession) -> None:
    """Lock these installments, in id order (fresh values loaded)."""
    await session.execute(
        select(Installment)
        .where(col(Installment.id).in_(ids))
        .order_by(col(Installment.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
