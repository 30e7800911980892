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
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Forbidden, InvalidTransition, NotFound
from app.models.base import utcnow
from app.models.events import PaymentConfirmed, PaymentReceived, PaymentReversed
from app.models.payment import (
    AllocationRead,
    Payment,
    PaymentAllocation,
    PaymentCreate,
    PaymentRead,
    PaymentReverse,
    PaymentStatus,
)
from app.money import fits_currency, round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit, outbox
from app.services.receivables import ledger
from app.services.receivables.access import account_clause, invalid, visible_account
from app.services.receivables.allocation import (
    Want,
    account_installment,
    allocate,
    applied_amount,
    auto_targets,
    lock,
    rate_for,
)

ZERO = Decimal(0)


def _check_write(principal: Principal) -> None:
    if not principal.allows("payments:write"):
        raise Forbidden("This credential may not record payments.")


def _check_finance(principal: Principal, what: str) -> None:
    _check_write(principal)
    if not principal.is_finance:
        raise Forbidden(f"Only a user with the finance permission may {what} payments.")


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
            inst = await account_installment(
                session, alloc.installment_id, account.id, f"{field}.installment_id"
            )
            rate = rate_for(
                data.currency, inst, alloc.exchange_rate or data.exchange_rate, f"{field}.exchange_rate"
            )
            if applied_amount(alloc.amount, rate, inst.currency) > ledger.open_amount(inst):
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
        await auto_targets(session, account.id, data.currency, data.exchange_rate)
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
    await outbox.emit(session, PaymentReceived(**_event(payment)))
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
            inst = await account_installment(
                session,
                uuid.UUID(item["installment_id"]),
                payment.account_id,
                f"allocations.{index}.installment_id",
            )
            rate = Decimal(item["exchange_rate"]) if item.get("exchange_rate") else None
            wants.append(Want(inst, Decimal(item["amount"]), rate))
        await lock([w.installment.id for w in wants], session)
        made = await allocate(
            session, principal, payment, wants, Decimal(payment.amount), source="payment", strict=True
        )
    else:
        targets, rate = await auto_targets(
            session, payment.account_id, payment.currency, payment.exchange_rate, lock=True
        )
        wants = [Want(i, None, rate) for i in targets]
        made = await allocate(
            session, principal, payment, wants, Decimal(payment.amount), source="payment", strict=False
        )
    await ledger.refresh(session, payment.org_id, [a.installment_id for a in made])
    await outbox.emit(session, PaymentConfirmed(**_event(payment), by_user_id=principal.user_id))


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
        session, PaymentReversed(**_event(payment), reversed_on=reversed_on.isoformat(), reason=data.reason)
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
