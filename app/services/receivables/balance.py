"""Account credit: the unallocated money of an account's confirmed payments, per currency, and
applying it to installments later (POST /v1/accounts/{id}/credit/apply)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden
from app.models.payment import (
    AllocationIn,
    AllocationRead,
    CreditApplied,
    CreditApply,
    CreditBalance,
    Payment,
    PaymentAllocation,
    PaymentStatus,
)
from app.models.receivable import Installment
from app.money import round_money
from app.security import Principal
from app.services import audit
from app.services.receivables import ledger
from app.services.receivables.access import invalid, visible_account
from app.services.receivables.allocation import (
    Want,
    account_installment,
    allocate,
    auto_targets,
    lock,
    rate_for,
)

ZERO = Decimal(0)


def _check_write(principal: Principal) -> None:
    if not principal.allows("payments:write"):
        raise Forbidden("This credential may not record payments.")


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
            inst = await account_installment(
                session, alloc.installment_id, account.id, f"allocations.{index}.installment_id"
            )
            named.append((alloc, inst))
        await lock([inst.id for _, inst in named], session)
        for index, (alloc, inst) in enumerate(named):
            need = alloc.amount
            for payment, left in sources:
                if need <= 0:
                    break
                rate = rate_for(
                    payment.currency, inst, alloc.exchange_rate, f"allocations.{index}.exchange_rate"
                )
                take = min(need, left - _used(made, payment.id))
                if take <= 0:
                    continue
                made += await allocate(
                    session, principal, payment, [Want(inst, take, rate)], take, source="credit", strict=True
                )
                need -= take
            if need > 0:
                raise invalid("allocations", "exceeds_credit", "more than the account's credit")
    else:
        for payment, left in sources:
            targets, rate = await auto_targets(session, account.id, payment.currency, None, lock=True)
            wants = [Want(i, None, rate) for i in targets]
            made += await allocate(session, principal, payment, wants, left, source="credit", strict=False)
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
