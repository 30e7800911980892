"""Receivables at risk (回款预警), each with its reasons:
- installment, `overdue_days`: overdue more than the organisation's `risk_overdue_days` (30);
- installment, `promise_missed`: its promise-to-pay date passed and it is still open;
- account, `overdue_amount`: overdue open amount in the base currency above `risk_overdue_amount`;
- account, `rating_dropped`: its credit rating fell at the last rating (the daily sweep rates).
The daily sweep records each (subject, reason) once and emits `risk.raised` for the new ones.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.account import Account
from app.models.base import utcnow
from app.models.common import Role
from app.models.dunning import ReceivableRisk
from app.models.events import RiskRaised
from app.models.receivable import Installment, Order, OrderStatus
from app.money import round_money
from app.security import Principal
from app.services import outbox
from app.services.receivables import credit, ledger
from app.services.receivables.access import order_clause

ZERO = Decimal(0)


def system(org_id: uuid.UUID) -> Principal:
    """The sweep's view: everything of one organisation."""
    return Principal(user_id=uuid.UUID(int=0), org_id=org_id, role=Role.admin, team_id=None)


async def current_risks(session: AsyncSession, principal: Principal, *, today: date) -> list[dict[str, Any]]:
    """Installments and accounts at risk today that the caller may see, with their reasons."""
    settings = await ledger.settings_of(session, principal.org_id)
    rows = (
        await session.execute(
            select(Installment, Order, Account)
            .join(Order, col(Order.id) == col(Installment.order_id))
            .join(Account, col(Account.id) == col(Order.account_id))
            .where(
                col(Installment.status).not_in(ledger.SETTLED),
                col(Order.status) != OrderStatus.cancelled,
                order_clause(principal),
            )
            .order_by(col(Installment.due_date), col(Installment.id))
        )
    ).all()
    risks: list[dict[str, Any]] = []
    overdue_by_account: dict[uuid.UUID, tuple[Account, Decimal]] = {}
    for inst, order, account in rows:
        open_now = ledger.open_amount(inst)
        if open_now <= 0:
            continue
        days = (today - inst.due_date).days
        reasons = []
        if days > settings.risk_overdue_days:
            reasons.append(
                {
                    "code": "overdue_days",
                    "detail": f"overdue {days} days (more than {settings.risk_overdue_days})",
                }
            )
        if inst.promise_date is not None and inst.promise_date < today:
            reasons.append(
                {"code": "promise_missed", "detail": f"promised to pay by {inst.promise_date}, still open"}
            )
        if reasons:
            risks.append(
                {
                    "subject": "installment",
                    "subject_id": inst.id,
                    "account_id": account.id,
                    "account_name": account.name,
                    "order_id": order.id,
                    "currency": inst.currency,
                    "open_amount": round_money(open_now, inst.currency),
                    "days_past_due": days,
                    "reasons": reasons,
                }
            )
        if days > 0 and inst.currency == settings.base_currency:
            _, total = overdue_by_account.get(account.id, (account, ZERO))
            overdue_by_account[account.id] = (account, total + open_now)
    accounts = {a.id: a for _, _, a in rows}
    threshold = settings.risk_overdue_amount
    for account_id, account in accounts.items():
        reasons = []
        overdue = overdue_by_account.get(account_id, (account, ZERO))[1]
        if threshold is not None and overdue > threshold:
            reasons.append(
                {
                    "code": "overdue_amount",
                    "detail": f"{round_money(overdue, settings.base_currency)} "
                    f"{settings.base_currency} overdue, above {threshold}",
                }
            )
        if account.credit_rating and credit.worse(account.credit_rating, account.credit_rating_previous):
            reasons.append(
                {
                    "code": "rating_dropped",
                    "detail": "credit rating dropped from "
                    f"{account.credit_rating_previous} to {account.credit_rating}",
                }
            )
        if reasons:
            risks.append(
                {
                    "subject": "account",
                    "subject_id": account.id,
                    "account_id": account.id,
                    "account_name": account.name,
                    "currency": settings.base_currency,
                    "open_amount": round_money(overdue, settings.base_currency),
                    "days_past_due": None,
                    "order_id": None,
                    "reasons": reasons,
                }
            )
    return risks


async def list_risks(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    """GET /v1/receivables/risks."""
    settings = await ledger.settings_of(session, principal.org_id)
    today = ledger.local_today(settings)
    return {
        "as_of": today,
        "settings": {
            "risk_overdue_days": settings.risk_overdue_days,
            "risk_overdue_amount": settings.risk_overdue_amount,
        },
        "data": await current_risks(session, principal, today=today),
    }


async def rate_accounts(session: AsyncSession, org_id: uuid.UUID, *, today: date) -> None:
    """Store each account's current rating; a change keeps the one before (a drop is a risk)."""
    settings = await ledger.settings_of(session, org_id)
    accounts = (
        await session.execute(
            select(Account)
            .where(col(Account.id).in_(select(col(Order.account_id)).distinct()))
            .order_by(col(Account.id))  # one lock order for every sweep
            .with_for_update()
        )
    ).scalars()
    for account in accounts:
        grade = (await credit.rating(session, account, settings, today))["rating"]
        if grade != account.credit_rating:
            account.credit_rating_previous = account.credit_rating
            account.credit_rating = grade
            account.version += 1
            account.updated_at = utcnow()
    await session.flush()


async def raise_risks(session: AsyncSession, org_id: uuid.UUID, *, today: date) -> int:
    """Rate the accounts, record every current risk once and emit `risk.raised` for new ones."""
    await rate_accounts(session, org_id, today=today)
    raised = 0
    for risk in await current_risks(session, system(org_id), today=today):
        for reason in risk["reasons"]:
            new = (
                await session.execute(
                    insert(ReceivableRisk)
                    .values(
                        id=uuid.uuid4(),
                        org_id=org_id,
                        subject=risk["subject"],
                        subject_id=risk["subject_id"],
                        account_id=risk["account_id"],
                        reason=reason["code"],
                        details={"detail": reason["detail"]},
                        raised_on=today,
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["org_id", "subject_id", "reason"])
                    .returning(col(ReceivableRisk.id))
                )
            ).scalar_one_or_none()
            if new is None:
                continue
            raised += 1
            await outbox.emit(
                session,
                RiskRaised(
                    subject=risk["subject"],
                    subject_id=risk["subject_id"],
                    account_id=risk["account_id"],
                    reason=reason["code"],
                    detail=reason["detail"],
                ),
                org_id=org_id,
            )
    return raised
