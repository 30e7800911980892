"""Payments (回款): record, confirm (finance), reject, reverse; allocation (核销) and account credit.

- A payment is recorded for an account with the allocations it names, or none. It waits in
  `pending_confirmation` until a finance user confirms it (organisation setting
  `payment_confirmation_required`, on by default; off: confirmed at once). Nothing is allocated,
  and no balance changes, before confirmation.
- On confirmation the money is allocated: to the named installments (each amount in the
  payment's currency; an installment in another currency needs an `exchange_rate`, units of the
  installment's currency per one unit of the payment's, kept on the allocation), else to the
  account's open installments oldest due first. What is left is the account's credit, applied
  later on request (`apply_credit`).
- Reversal (a confirmed payment only) takes every allocation of the payment back, credit
  applications included; the allocations stay as history, dated by `reversed_on`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden, InvalidTransition, NotFound
from app.models.base import utcnow
from app.models.payment import (
    AllocationIn,
    AllocationRead,
    CreditApplied,
    CreditApply,
    CreditBalance,
    Payment,
    PaymentAllocation,
    PaymentCreate,
    PaymentRead,
    PaymentReverse,
    PaymentStatus,
)
from app.models.receivable import Installment, Order, OrderStatus
from app.money import fits_currency, round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit, outbox
from app.services.receivables import ledger
from app.services.receivables.orders import account_clause, invalid, visible_account

ZERO = Decimal(0)


def _check_write(principal: Principal) -> None:
    if not principal.allows("payments:write"):
        raise Forbidden("This credential may not record payments.")


def _check_finance(principal: Principal, what: str) -> None:
    _check_write(principal)
    if not principal.is_finance:
        raise Forbidden(f"Only a user with the finance permission may {what} payments.")


async def _account_installment(
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


def _rate_for(payment_currency: str, inst: Installment, rate: Decimal | None, field: str) -> Decimal | None:
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


def _applied(amount: Decimal, rate: Decimal | None, currency: str) -> Decimal:
    return amount if rate is None else round_money(amount * rate, currency)


async def record_payment(session: AsyncSession, principal: Principal, data: PaymentCreate) -> Payment:
    """Record a payment received from an account (see the module docstring)."""
    _check_write(principal)
    account = await visible_account(session, principal, data.account_id)
    if not fits_currency(data.amount, data.currency):
        raise invalid("amount", "too_many_decimals", f"too many digits for {data.currency}")
    requested: list[dict[str, Any]] | None = None
    if data.allocations is not None:
        requested = []
        total = ZERO
        seen: set[uuid.UUID] = set()
        for index, alloc in enumerate(data.allocations):
            field = f"allocations.{index}"
            if alloc.installment_id in seen:
                raise invalid(f"{field}.installment_id", "duplicate", "each installment once")
            seen.add(alloc.installment_id)
            if not fits_currency(alloc.amount, data.currency):
                raise invalid(f"{field}.amount", "too_many_decimals", f"too many digits for {data.currency}")
            inst = await _account_installment(
                session, alloc.installment_id, account.id, f"{field}.installment_id"
            )
            rate = _rate_for(
                data.currency, inst, alloc.exchange_rate or data.exchange_rate, f"{field}.exchange_rate"
            )
            if _applied(alloc.amount, rate, inst.currency) > ledger.open_amount(inst):
                raise invalid(
                    f"{field}.amount", "exceeds_open_amount", "more than the installment's open amount"
                )
            total += alloc.amount
            requested.append(
                {"installment_id": str(inst.id), "amount": str(alloc.amount), "exchange_rate": _text(rate)}
            )
        if total > data.amount:
            raise invalid("allocations", "exceeds_payment", "the allocations add up to more than the payment")
    else:
        await _auto_targets(session, account.id, data.currency, data.exchange_rate)
    settings = await ledger.settings_of(session, principal.org_id)
    if data.received_at > ledger.local_today(settings):
        raise invalid("received_at", "in_future", "a payment cannot be received in the future")
    payment = Payment(
        account_id=account.id,
        amount=data.amount,
        currency=data.currency,
        received_at=data.received_at,
        method=data.method,
        reference=data.reference,
        note=data.note,
        requested_allocations=requested,
        exchange_rate=data.exchange_rate,
        created_by_id=principal.user_id,
    )
    session.add(payment)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="payment",
        entity_id=payment.id,
        action="create",
        changes={
            "amount": [None, str(data.amount)],
            "currency": [None, data.currency],
            "status": [None, str(payment.status)],
        },
    )
    await outbox.emit(session, "payment.received", _event(payment))
    if not settings.payment_confirmation_required:
        await _confirm(session, principal, payment)
    await session.flush()
    return payment


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _event(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.id,
        "account_id": payment.account_id,
        "amount": str(round_money(Decimal(payment.amount), payment.currency)),
        "currency": payment.currency,
        "received_at": payment.received_at.isoformat(),
        "status": str(payment.status),
    }


async def _auto_targets(
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
class _Want:
    installment: Installment
    amount: Decimal | None  # in the payment's currency; None = as much as is open
    rate: Decimal | None


async def _allocate(
    session: AsyncSession,
    principal: Principal,
    payment: Payment,
    wants: list[_Want],
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
            applied = _applied(amount, want.rate, inst.currency)
            if applied > open_now:
                if strict:
                    raise Conflict(f"Installment {inst.id} has only {open_now} {inst.currency} open now.")
                applied = open_now
                amount = _back(applied, want.rate, payment.currency)
        else:
            can = _applied(available, want.rate, inst.currency)
            if can <= open_now:
                amount, applied = available, can
            else:
                applied = open_now
                amount = _back(open_now, want.rate, payment.currency)
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


def _back(applied: Decimal, rate: Decimal | None, currency: str) -> Decimal:
    """The payment-currency amount behind an applied amount."""
    return applied if rate is None else round_money(applied / rate, currency)


async def _confirm(session: AsyncSession, principal: Principal, payment: Payment) -> None:
    """Allocate a payment being confirmed and refresh the installments it pays."""
    payment.status = PaymentStatus.confirmed
    payment.confirmed_by_id = principal.user_id
    payment.confirmed_at = utcnow()
    payment.version += 1
    payment.updated_at = utcnow()
    if payment.requested_allocations is not None:
        wants = []
        for index, item in enumerate(payment.requested_allocations):
            inst = await _account_installment(
                session,
                uuid.UUID(item["installment_id"]),
                payment.account_id,
                f"allocations.{index}.installment_id",
            )
            rate = Decimal(item["exchange_rate"]) if item.get("exchange_rate") else None
            wants.append(_Want(inst, Decimal(item["amount"]), rate))
        await _lock([w.installment.id for w in wants], session)
        made = await _allocate(
            session, principal, payment, wants, Decimal(payment.amount), source="payment", strict=True
        )
    else:
        targets, rate = await _auto_targets(
            session, payment.account_id, payment.currency, payment.exchange_rate, lock=True
        )
        wants = [_Want(i, None, rate) for i in targets]
        made = await _allocate(
            session, principal, payment, wants, Decimal(payment.amount), source="payment", strict=False
        )
    await ledger.refresh(session, payment.org_id, [a.installment_id for a in made])
    await outbox.emit(session, "payment.confirmed", _event(payment) | {"by_user_id": principal.user_id})


async def _lock(ids: list[uuid.UUID], session: AsyncSession) -> None:
    await session.execute(
        select(Installment)
        .where(col(Installment.id).in_(ids))
        .order_by(col(Installment.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def get_payment(
    session: AsyncSession, principal: Principal, payment_id: uuid.UUID, *, lock: bool = False
) -> Payment:
    """A payment of an account whose receivables the caller may see, else 404."""
    stmt = select(Payment).where(
        col(Payment.id) == payment_id, account_clause(principal, col(Payment.account_id))
    )
    if lock:
        stmt = stmt.with_for_update(of=Payment).execution_options(populate_existing=True)
    payment = (await session.execute(stmt)).scalar_one_or_none()
    if payment is None:
        raise NotFound(f"No payment with id {payment_id}.")
    return payment


async def confirm_payment(session: AsyncSession, principal: Principal, payment_id: uuid.UUID) -> Payment:
    """A finance user confirms a pending payment: it is allocated and counts from now on."""
    _check_finance(principal, "confirm")
    payment = await get_payment(session, principal, payment_id, lock=True)
    if payment.status != PaymentStatus.pending_confirmation:
        raise InvalidTransition(f"A {payment.status!s} payment cannot be confirmed.")
    await _confirm(session, principal, payment)
    audit.record(
        session,
        actor=principal,
        entity="payment",
        entity_id=payment.id,
        action="confirm",
        changes={"status": ["pending_confirmation", "confirmed"]},
    )
    await session.flush()
    return payment


async def reject_payment(
    session: AsyncSession, principal: Principal, payment_id: uuid.UUID, *, reason: str | None
) -> Payment:
    """A finance user rejects a pending payment: it never counts."""
    _check_finance(principal, "reject")
    payment = await get_payment(session, principal, payment_id, lock=True)
    if payment.status != PaymentStatus.pending_confirmation:
        raise InvalidTransition(f"A {payment.status!s} payment cannot be rejected.")
    payment.status = PaymentStatus.rejected
    payment.rejected_by_id = principal.user_id
    payment.rejected_at = utcnow()
    payment.reject_reason = reason
    payment.version += 1
    payment.updated_at = utcnow()
    audit.record(
        session,
        actor=principal,
        entity="payment",
        entity_id=payment.id,
        action="reject",
        changes={"status": ["pending_confirmation", "rejected"], "reason": [None, reason]},
    )
    await session.flush()
    return payment


async def reverse_payment(
    session: AsyncSession, principal: Principal, payment_id: uuid.UUID, data: PaymentReverse
) -> Payment:
    """Reverse a confirmed payment (bounced, refunded, entered in error): its allocations stop
    counting from `reversed_on` (default today) and the installments are open again."""
    _check_finance(principal, "reverse")
    payment = await get_payment(session, principal, payment_id, lock=True)
    if payment.status != PaymentStatus.confirmed:
        raise InvalidTransition(f"Only a confirmed payment can be reversed; this one is {payment.status!s}.")
    today = await ledger.org_today(session, principal.org_id)
    reversed_on = data.reversed_on or today
    if reversed_on < payment.received_at:
        raise invalid("reversed_on", "before_received", "a reversal cannot precede the payment's received_at")
    if reversed_on > today:
        raise invalid("reversed_on", "in_future", "a reversal cannot be dated in the future")
    payment.status = PaymentStatus.reversed
    payment.reversed_by_id = principal.user_id
    payment.reversed_at = utcnow()
    payment.reversed_on = reversed_on
    payment.reversal_reason = data.reason
    payment.version += 1
    payment.updated_at = utcnow()
    allocations = await allocations_of(session, [payment.id])
    await session.flush()
    await ledger.refresh(session, payment.org_id, [a.installment_id for a in allocations.get(payment.id, [])])
    audit.record(
        session,
        actor=principal,
        entity="payment",
        entity_id=payment.id,
        action="reverse",
        changes={
            "status": ["confirmed", "reversed"],
            "reversed_on": [None, reversed_on.isoformat()],
            "reason": [None, data.reason],
        },
    )
    await outbox.emit(
        session,
        "payment.reversed",
        _event(payment) | {"reversed_on": reversed_on.isoformat(), "reason": data.reason},
    )
    await session.flush()
    return payment


async def allocations_of(
    session: AsyncSession, payment_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[PaymentAllocation]]:
    """Allocations per payment, oldest first."""
    if not payment_ids:
        return {}
    rows = (
        await session.execute(
            select(PaymentAllocation)
            .where(col(PaymentAllocation.payment_id).in_(payment_ids))
            .order_by(col(PaymentAllocation.created_at), col(PaymentAllocation.id))
        )
    ).scalars()
    out: dict[uuid.UUID, list[PaymentAllocation]] = {}
    for a in rows:
        out.setdefault(a.payment_id, []).append(a)
    return out


def read_model(payment: Payment, allocations: list[PaymentAllocation]) -> PaymentRead:
    """A payment as the API shows it; `unallocated` is its credit (zero unless confirmed)."""
    allocated = sum((Decimal(a.amount) for a in allocations), ZERO)
    unallocated = Decimal(payment.amount) - allocated if payment.status == PaymentStatus.confirmed else ZERO
    data = payment.model_dump(warnings=False)
    data["allocations"] = [AllocationRead.model_validate(a.model_dump(warnings=False)) for a in allocations]
    data["unallocated"] = unallocated
    return PaymentRead.model_validate(data)


async def read(session: AsyncSession, payment: Payment) -> PaymentRead:
    """A payment with its allocations, as the API shows it."""
    return read_model(payment, (await allocations_of(session, [payment.id])).get(payment.id, []))


async def read_many(session: AsyncSession, payments: list[Payment]) -> list[PaymentRead]:
    """Payments with their allocations, in one query for the allocations."""
    allocations = await allocations_of(session, [p.id for p in payments])
    return [read_model(p, allocations.get(p.id, [])) for p in payments]


async def list_payments(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    account_id: uuid.UUID | None = None,
    status: PaymentStatus | None = None,
) -> tuple[list[Payment], str | None]:
    """Payments of the accounts whose receivables the caller may see."""
    stmt = select(Payment).where(account_clause(principal, col(Payment.account_id)))
    if account_id is not None:
        stmt = stmt.where(col(Payment.account_id) == account_id)
    if status is not None:
        stmt = stmt.where(col(Payment.status) == status)
    return await paginate(
        session,
        stmt,
        page,
        id_column=Payment.id,
        sortable={"created_at": Payment.created_at, "received_at": Payment.received_at},
    )


async def credit_by_payment(
    session: AsyncSession, account_id: uuid.UUID, *, lock: bool = False
) -> list[tuple[Payment, Decimal]]:
    """The account's confirmed payments with money left, oldest received first, and what is left."""
    allocated = (
        select(func.coalesce(func.sum(col(PaymentAllocation.amount)), 0))
        .where(
            col(PaymentAllocation.payment_id) == col(Payment.id),
            col(PaymentAllocation.org_id) == col(Payment.org_id),
        )
        .scalar_subquery()
    )
    stmt = (
        select(Payment, allocated)
        .where(col(Payment.account_id) == account_id, col(Payment.status) == PaymentStatus.confirmed)
        .order_by(col(Payment.received_at), col(Payment.created_at), col(Payment.id))
    )
    if lock:
        stmt = stmt.with_for_update(of=Payment)
    out = []
    for payment, used in (await session.execute(stmt)).all():
        left = Decimal(payment.amount) - Decimal(used)
        if left > 0:
            out.append((payment, left))
    return out


async def account_credit(session: AsyncSession, account_id: uuid.UUID) -> list[CreditBalance]:
    """The account's credit (unallocated money of confirmed payments) per currency."""
    totals: dict[str, Decimal] = {}
    for payment, left in await credit_by_payment(session, account_id):
        totals[payment.currency] = totals.get(payment.currency, ZERO) + left
    return [CreditBalance(currency=c, amount=round_money(a, c)) for c, a in sorted(totals.items())]


async def get_credit(
    session: AsyncSession, principal: Principal, account_id: uuid.UUID
) -> list[CreditBalance]:
    """An account's credit balances."""
    await visible_account(session, principal, account_id)
    return await account_credit(session, account_id)


async def apply_credit(
    session: AsyncSession, principal: Principal, account_id: uuid.UUID, data: CreditApply
) -> CreditApplied:
    """Apply the account's credit (oldest payment first) to the named installments, else to its
    open installments oldest due first; allocations made this way carry source "credit"."""
    _check_write(principal)
    account = await visible_account(session, principal, account_id)
    sources = [
        (p, left)
        for p, left in await credit_by_payment(session, account.id, lock=True)
        if data.currency is None or p.currency == data.currency
    ]
    if not sources:
        raise Conflict("The account has no credit to apply.")
    made: list[PaymentAllocation] = []
    if data.allocations is not None:
        named: list[tuple[AllocationIn, Installment]] = []
        for index, alloc in enumerate(data.allocations):
            inst = await _account_installment(
                session, alloc.installment_id, account.id, f"allocations.{index}.installment_id"
            )
            named.append((alloc, inst))
        await _lock([inst.id for _, inst in named], session)
        for index, (alloc, inst) in enumerate(named):
            need = alloc.amount
            for payment, left in sources:
                if need <= 0:
                    break
                rate = _rate_for(
                    payment.currency, inst, alloc.exchange_rate, f"allocations.{index}.exchange_rate"
                )
                take = min(need, left - _used(made, payment.id))
                if take <= 0:
                    continue
                made += await _allocate(
                    session, principal, payment, [_Want(inst, take, rate)], take, source="credit", strict=True
                )
                need -= take
            if need > 0:
                raise invalid("allocations", "exceeds_credit", "more than the account's credit")
    else:
        for payment, left in sources:
            targets, rate = await _auto_targets(session, account.id, payment.currency, None, lock=True)
            wants = [_Want(i, None, rate) for i in targets]
            made += await _allocate(session, principal, payment, wants, left, source="credit", strict=False)
    if not made:
        raise Conflict("Nothing open to apply the credit to.")
    await ledger.refresh(session, principal.org_id, [a.installment_id for a in made])
    audit.record(
        session,
        actor=principal,
        entity="account",
        entity_id=account.id,
        action="apply_credit",
        changes={
            "allocations": [
                None,
                [{"installment_id": str(a.installment_id), "amount": str(a.amount)} for a in made],
            ]
        },
    )
    await session.flush()
    return CreditApplied(
        account_id=account.id,
        allocations=[AllocationRead.model_validate(a.model_dump(warnings=False)) for a in made],
        credit=await account_credit(session, account.id),
    )


def _used(made: list[PaymentAllocation], payment_id: uuid.UUID) -> Decimal:
    return sum((Decimal(a.amount) for a in made if a.payment_id == payment_id), ZERO)
