"""The one place that says what an installment owes and which status it has.

- paid amount = Σ applied amounts of the allocations of its *confirmed* payments (a pending,
  rejected or reversed payment changes no balance);
- open amount = amount − paid amount − written-off amount;
- status (in this order): written_off when written off (its order was cancelled); paid when
  the paid amount covers the amount; overdue when the due date is before today in the
  organisation's timezone; partially_paid when something is paid; else scheduled.

Every payment step refreshes the installments it touched (`refresh`), and the daily cron moves
the ones that fell due (`mark_overdue`); both emit `installment.paid` / `installment.overdue`
exactly when the status changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.events import InstallmentOverdue, InstallmentPaid
from app.models.organisation import OrganisationSettings
from app.models.payment import Payment, PaymentAllocation, PaymentStatus
from app.models.receivable import Installment, InstallmentStatus, Order, OrderStatus
from app.money import round_money
from app.services import outbox

# Business dates are the organisation's local dates; the ledger's callers reach these here too.
from app.services.common import local_today as local_today
from app.services.common import org_today as org_today
from app.services.common import settings_of as settings_of

ZERO = Decimal(0)
SETTLED = (InstallmentStatus.paid, InstallmentStatus.written_off)


def local_date(settings: OrganisationSettings, moment: datetime) -> date:
    """The organisation's local date of an instant."""
    return moment.astimezone(ZoneInfo(settings.timezone)).date()


def start_of_day(settings: OrganisationSettings, day: date) -> datetime:
    """The instant a local date begins, in UTC."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo(settings.timezone)).astimezone(UTC)


def open_amount(installment: Installment) -> Decimal:
    """What is still owed on an installment now."""
    return (
        Decimal(installment.amount)
        - Decimal(installment.paid_amount)
        - Decimal(installment.written_off_amount)
    )


def status_for(installment: Installment, today: date) -> InstallmentStatus:
    """The status an installment has today (see the module docstring)."""
    if installment.written_off_on is not None:
        return InstallmentStatus.written_off
    if Decimal(installment.paid_amount) >= Decimal(installment.amount):
        return InstallmentStatus.paid
    if installment.due_date < today:
        return InstallmentStatus.overdue
    if Decimal(installment.paid_amount) > 0:
        return InstallmentStatus.partially_paid
    return InstallmentStatus.scheduled


async def confirmed_paid(
    session: AsyncSession, installment_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Decimal]:
    """Paid amount per installment: Σ applied amounts of allocations of confirmed payments."""
    ids = list(installment_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(col(PaymentAllocation.installment_id), func.sum(col(PaymentAllocation.applied_amount)))
        .join(
            Payment,
            (col(Payment.id) == col(PaymentAllocation.payment_id))
            & (col(Payment.org_id) == col(PaymentAllocation.org_id)),
        )
        .where(col(PaymentAllocation.installment_id).in_(ids), col(Payment.status) == PaymentStatus.confirmed)
        .group_by(col(PaymentAllocation.installment_id))
    )
    return {row[0]: Decimal(row[1]) for row in rows}


async def refresh(
    session: AsyncSession, org_id: uuid.UUID, installment_ids: Iterable[uuid.UUID]
) -> list[Installment]:
    """Recompute paid amount and status of these installments (locked), emit the status events,
    and complete or reopen their orders."""
    ids = sorted(set(installment_ids))
    if not ids:
        return []
    installments = list(
        (
            await session.execute(
                select(Installment)
                .where(col(Installment.id).in_(ids))
                .order_by(col(Installment.id))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalars()
    )
    paid = await confirmed_paid(session, ids)
    today = await org_today(session, org_id)
    orders: set[uuid.UUID] = set()
    for inst in installments:
        before = inst.status
        inst.paid_amount = paid.get(inst.id, ZERO)
        after = status_for(inst, today)
        if after != before:
            inst.status = after
            inst.version += 1
            inst.updated_at = utcnow()
            await emit_status(session, inst, after, org_id=org_id)
        orders.add(inst.order_id)
    await session.flush()
    await _complete_orders(session, orders)
    return installments


async def emit_status(
    session: AsyncSession, inst: Installment, status: InstallmentStatus, *, org_id: uuid.UUID
) -> None:
    """`installment.paid` / `installment.overdue` when an installment enters that status."""
    if status not in (InstallmentStatus.paid, InstallmentStatus.overdue):
        return
    event = InstallmentPaid if status == InstallmentStatus.paid else InstallmentOverdue
    await outbox.emit(
        session,
        event(
            installment_id=inst.id,
            order_id=inst.order_id,
            due_date=inst.due_date.isoformat(),
            amount=str(round_money(Decimal(inst.amount), inst.currency)),
            paid_amount=str(round_money(Decimal(inst.paid_amount), inst.currency)),
            currency=inst.currency,
        ),
        org_id=org_id,
    )


async def _complete_orders(session: AsyncSession, order_ids: set[uuid.UUID]) -> None:
    """An open order whose installments are all settled is completed; a completed one with an
    unsettled installment (a reversal) is open again."""
    for order_id in order_ids:
        order = await session.get(Order, order_id)
        if order is None or order.status == OrderStatus.cancelled:
            continue
        statuses = (
            await session.execute(
                select(col(Installment.status)).where(col(Installment.order_id) == order_id)
            )
        ).scalars()
        settled = all(s in SETTLED for s in statuses)
        target = OrderStatus.completed if settled else OrderStatus.open
        if order.status != target:
            order.status = target
            order.version += 1
            order.updated_at = utcnow()


async def mark_overdue(session: AsyncSession, org_id: uuid.UUID, today: date) -> int:
    """Move the organisation's unpaid installments that fell due before `today` to overdue and
    emit `installment.overdue` once each (the status guard makes two workers at once harmless)."""
    rows = (
        await session.execute(
            update(Installment)
            .where(
                col(Installment.org_id) == org_id,
                col(Installment.status).in_([InstallmentStatus.scheduled, InstallmentStatus.partially_paid]),
                col(Installment.due_date) < today,
            )
            .values(
                status=InstallmentStatus.overdue, updated_at=utcnow(), version=col(Installment.version) + 1
            )
            .returning(Installment)
            .execution_options(synchronize_session=False)
        )
    ).scalars()
    count = 0
    for inst in rows:
        await emit_status(session, inst, InstallmentStatus.overdue, org_id=org_id)
        count += 1
    return count
