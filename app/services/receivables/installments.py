"""Installments (回款计划): look-ups, reschedule or split an unpaid one (the order's total never
changes; the audit log keeps what it was), promise to pay."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden, NotFound
from app.models.base import utcnow
from app.models.receivable import (
    Installment,
    InstallmentRead,
    InstallmentReschedule,
    InstallmentStatus,
    Order,
    PromiseCreate,
)
from app.money import HUNDRED, fits_currency
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.receivables import ledger
from app.services.receivables.access import invalid, order_clause


def _check_write(principal: Principal) -> None:
    if not principal.allows("orders:write"):
        raise Forbidden("This credential may not change orders.")


def installment_read(installment: Installment) -> InstallmentRead:
    """An installment as the API shows it."""
    return InstallmentRead.model_validate(installment.model_dump(warnings=False))


async def lock_installments(session: AsyncSession, ids: list[uuid.UUID]) -> list[Installment]:
    """These installments, locked, in sequence."""
    return list(
        (
            await session.execute(
                select(Installment)
                .where(col(Installment.id).in_(ids))
                .order_by(col(Installment.sequence))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    )


async def get_installment(
    session: AsyncSession, principal: Principal, installment_id: uuid.UUID, *, lock: bool = False
) -> Installment:
    """An installment of an order the caller may see, else 404."""
    stmt = (
        select(Installment)
        .join(Order, col(Order.id) == col(Installment.order_id))
        .where(col(Installment.id) == installment_id, order_clause(principal))
    )
    if lock:
        stmt = stmt.with_for_update(of=Installment).execution_options(populate_existing=True)
    inst = (await session.execute(stmt)).scalar_one_or_none()
    if inst is None:
        raise NotFound(f"No installment with id {installment_id}.")
    return inst


async def list_installments(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    status: InstallmentStatus | None = None,
    account_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
) -> tuple[list[Installment], str | None]:
    """Installments the caller may see, filtered by status, account or order."""
    stmt = (
        select(Installment)
        .join(Order, col(Order.id) == col(Installment.order_id))
        .where(order_clause(principal))
    )
    if status is not None:
        stmt = stmt.where(col(Installment.status) == status)
    if account_id is not None:
        stmt = stmt.where(col(Order.account_id) == account_id)
    if order_id is not None:
        stmt = stmt.where(col(Installment.order_id) == order_id)
    return await paginate(
        session,
        stmt,
        page,
        id_column=Installment.id,
        sortable={"due_date": Installment.due_date, "created_at": Installment.created_at},
        default_sort="due_date",
    )


async def reschedule_installment(
    session: AsyncSession, principal: Principal, installment_id: uuid.UUID, data: InstallmentReschedule
) -> list[Installment]:
    """Move an unpaid installment to a new due date, or split it into parts with their own due
    dates; the order's total never changes and the audit log keeps what it was."""
    _check_write(principal)
    inst = await get_installment(session, principal, installment_id, lock=True)
    if inst.status in ledger.SETTLED or Decimal(inst.paid_amount) > 0:
        raise Conflict("Only an installment with nothing paid can be rescheduled or split.")
    order = await session.get(Order, inst.order_id)
    assert order is not None
    settings = await ledger.settings_of(session, principal.org_id)
    ordered_on = ledger.local_date(settings, order.ordered_at)
    today = ledger.local_today(settings)
    before = {"due_date": inst.due_date.isoformat(), "amount": str(inst.amount)}
    if data.due_date is not None:
        if data.due_date < ordered_on:
            raise invalid("due_date", "before_order", "due before the order date")
        inst.due_date = data.due_date
        inst.status = ledger.status_for(inst, today)
        inst.version += 1
        inst.updated_at = utcnow()
        audit.record(
            session,
            actor=principal,
            entity="installment",
            entity_id=inst.id,
            action="reschedule",
            changes={
                "due_date": [before["due_date"], data.due_date.isoformat()],
                "reason": [None, data.reason],
            },
        )
        await session.flush()
        return [inst]
    parts = data.parts or []
    for index, part in enumerate(parts):
        if not fits_currency(part.amount, inst.currency):
            raise invalid(
                f"parts.{index}.amount", "too_many_decimals", f"too many digits for {inst.currency}"
            )
        if part.due_date < ordered_on:
            raise invalid(f"parts.{index}.due_date", "before_order", "due before the order date")
    if sum((p.amount for p in parts), Decimal(0)) != Decimal(inst.amount):
        raise invalid("parts", "must_sum_to_amount", f"the parts must add up to {inst.amount}")
    later = list(
        (
            await session.execute(
                select(Installment)
                .where(col(Installment.order_id) == inst.order_id, col(Installment.sequence) > inst.sequence)
                .order_by(col(Installment.sequence).desc())
                .with_for_update()
            )
        ).scalars()
    )
    shift = len(parts) - 1
    for other in later:  # highest first, so (order_id, sequence) stays unique at every step
        other.sequence += shift
        other.version += 1
        await session.flush()
    total = Decimal(order.total)
    first = parts[0]
    inst.amount = first.amount
    inst.due_date = first.due_date
    inst.percent = (first.amount * HUNDRED / total).quantize(Decimal("0.0001")) if total else inst.percent
    inst.status = ledger.status_for(inst, today)
    inst.version += 1
    inst.updated_at = utcnow()
    created = [inst]
    for offset, part in enumerate(parts[1:], 1):
        new = Installment(
            order_id=inst.order_id,
            sequence=inst.sequence + offset,
            percent=(part.amount * HUNDRED / total).quantize(Decimal("0.0001")) if total else Decimal(0),
            due_date=part.due_date,
            amount=part.amount,
            currency=inst.currency,
        )
        new.status = ledger.status_for(new, today)
        session.add(new)
        created.append(new)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="installment",
        entity_id=inst.id,
        action="split",
        changes={
            "before": [before, None],
            "parts": [
                None,
                [
                    {"id": str(c.id), "amount": str(c.amount), "due_date": c.due_date.isoformat()}
                    for c in created
                ],
            ],
            "reason": [None, data.reason],
        },
    )
    return created


async def promise_to_pay(
    session: AsyncSession, principal: Principal, installment_id: uuid.UUID, data: PromiseCreate
) -> Installment:
    """Record the customer's promise to pay an installment by a date: dunning pauses until then,
    and a promise missed raises a risk."""
    _check_write(principal)
    inst = await get_installment(session, principal, installment_id, lock=True)
    if inst.status in ledger.SETTLED:
        raise Conflict("The installment is settled; there is nothing to promise.")
    today = await ledger.org_today(session, principal.org_id)
    if data.date < today:
        raise invalid("date", "in_past", "a promise to pay lies today or later")
    if data.amount is not None and not fits_currency(data.amount, inst.currency):
        raise invalid("amount", "too_many_decimals", f"too many digits for {inst.currency}")
    before = inst.promise_date.isoformat() if inst.promise_date else None
    inst.promise_date = data.date
    inst.promise_amount = data.amount
    inst.promise_note = data.note
    inst.promise_made_on = today
    inst.version += 1
    inst.updated_at = utcnow()
    audit.record(
        session,
        actor=principal,
        entity="installment",
        entity_id=inst.id,
        action="promise_to_pay",
        changes={"promise_date": [before, data.date.isoformat()], "promise_amount": [None, str(data.amount)]},
    )
    await session.flush()
    return inst
