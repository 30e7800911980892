"""Orders (合同/销售订单) and their payment plans (回款计划): from an accepted quote, or entered
directly for an account; cancel, reschedule or split an installment, promise to pay.

Visibility of receivables (orders, installments, payments, messages, risks; what a caller
cannot see is a 404):
- admin, viewer and finance users: every one of the organisation;
- manager: those of orders owned by them or their team's members, of accounts owned by them or
  their team's members, and of orders whose deal they may see;
- rep: the same, for what they own themselves.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, FieldError, Forbidden, InvalidTransition, NotFound, ValidationFailed
from app.models.account import Account
from app.models.base import utcnow
from app.models.common import Role
from app.models.deal import Deal
from app.models.quote import PaymentTerm, Quote
from app.models.receivable import (
    Installment,
    InstallmentRead,
    InstallmentReschedule,
    InstallmentStatus,
    Order,
    OrderCancel,
    OrderCreate,
    OrderRead,
    OrderStatus,
    PromiseCreate,
)
from app.models.user import User
from app.money import HUNDRED, fits_currency, percent_of, round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.deals.service import visibility_clause
from app.services.quotes.service import MAX_AMOUNT, resolve_lines
from app.services.quotes.totals import compute, line_json
from app.services.receivables import ledger


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


def invalid(field: str, code: str, message: str) -> ValidationFailed:
    """A 422 naming one field."""
    return ValidationFailed(message, errors=[FieldError(field=field, code=code, message=message)])


def owner_clause(principal: Principal, owner: Any) -> ColumnElement[bool]:
    """Whether an owner column is the caller or (for a manager) a member of the caller's team;
    true for admins, viewers and finance users."""
    if principal.role in (Role.admin, Role.viewer) or principal.is_finance:
        return true()
    own: ColumnElement[bool] = owner == principal.user_id
    if principal.role == Role.manager and principal.team_id is not None:
        team = select(col(User.id)).where(col(User.team_id) == principal.team_id)
        return or_(own, owner.in_(team))
    return own


def order_clause(principal: Principal) -> ColumnElement[bool]:
    """The orders a caller may see (see the module docstring)."""
    if principal.role in (Role.admin, Role.viewer) or principal.is_finance:
        return true()
    accounts = select(col(Account.id)).where(owner_clause(principal, col(Account.owner_id)))
    deals = select(col(Deal.id)).where(visibility_clause(principal))
    return or_(
        owner_clause(principal, col(Order.owner_id)),
        col(Order.account_id).in_(accounts),
        col(Order.deal_id).in_(deals),
    )


def account_clause(principal: Principal, account_id: Any) -> ColumnElement[bool]:
    """Whether the caller may see an account's receivables (payments, credit, risks): they own
    it (or their team does), or they may see one of its orders."""
    if principal.role in (Role.admin, Role.viewer) or principal.is_finance:
        return true()
    owned = select(col(Account.id)).where(owner_clause(principal, col(Account.owner_id)))
    ordered = select(col(Order.account_id)).where(order_clause(principal))
    return or_(account_id.in_(owned), account_id.in_(ordered))


async def visible_account(session: AsyncSession, principal: Principal, account_id: uuid.UUID) -> Account:
    """An account whose receivables the caller may see, else 404."""
    account = (
        await session.execute(
            select(Account).where(col(Account.id) == account_id, account_clause(principal, col(Account.id)))
        )
    ).scalar_one_or_none()
    if account is None:
        raise NotFound(f"No account with id {account_id}.")
    return account


def read_model(order: Order, installments: list[Installment]) -> OrderRead:
    """An order with its payment plan as the API shows it."""
    data: dict[str, Any] = order.model_dump(warnings=False)
    data["installments"] = [installment_read(i) for i in installments]
    return OrderRead.model_validate(data)


def installment_read(installment: Installment) -> InstallmentRead:
    """An installment as the API shows it."""
    return InstallmentRead.model_validate(installment.model_dump(warnings=False))


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
    for inst in await _lock_installments(session, [i.id for i in installments]):
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


async def _lock_installments(session: AsyncSession, ids: list[uuid.UUID]) -> list[Installment]:
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
