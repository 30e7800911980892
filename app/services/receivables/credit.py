"""Customer credit (回款预警): exposure against the credit limit, the check when a quote is
accepted, and the explainable A/B/C/D rating.

Exposure of an account, in its credit currency (the organisation's base currency when the
account has none): the open amount of every unsettled installment of its open orders, due or
not, plus the totals of its deals' quotes in status sent or approved. Amounts in other
currencies are listed apart and not converted.

Rating: four factors, each scored 0-100, weighted by the organisation's `credit_rating_weights`
(they sum to 100); the grade is the best one whose least score (`credit_rating_grades`) the
weighted score reaches, else D.
- on_time_share: paid installments paid on or before their due date (the day the payment that
  completed one was received), share × 100; no history scores 100;
- mean_days_late: mean days late of the paid installments; 100 − days × 100 / 90, at least 0;
- current_overdue: the overdue open amount against the exposure; 100 × (1 − share);
- utilisation: exposure against the limit; 100 up to half the limit, 0 at the limit or above,
  linear between; no limit scores 100.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden
from app.models.account import Account
from app.models.common import Role
from app.models.deal import Deal
from app.models.organisation import OrganisationSettings
from app.models.payment import Payment, PaymentAllocation, PaymentStatus
from app.models.quote import Quote, QuoteStatus
from app.models.receivable import Installment, InstallmentStatus, Order, OrderStatus
from app.money import round_money
from app.security import Principal
from app.services.receivables import ledger
from app.services.receivables.access import visible_account
from app.services.receivables.balance import account_credit

ZERO = Decimal(0)
HUNDRED = Decimal(100)
EXPOSURE_QUOTE_STATUSES = (QuoteStatus.sent, QuoteStatus.approved)
GRADES = ("A", "B", "C", "D")


def credit_currency(account: Account, settings: OrganisationSettings) -> str:
    """The currency an account's limit and exposure are in."""
    return account.credit_currency or settings.base_currency


async def open_installments(session: AsyncSession, account_id: uuid.UUID) -> list[Installment]:
    """The unsettled installments of the account's open orders."""
    return list(
        (
            await session.execute(
                select(Installment)
                .join(Order, col(Order.id) == col(Installment.order_id))
                .where(
                    col(Order.account_id) == account_id,
                    col(Order.status) != OrderStatus.cancelled,
                    col(Installment.status).not_in(ledger.SETTLED),
                )
            )
        ).scalars()
    )


async def exposure(
    session: AsyncSession,
    account: Account,
    settings: OrganisationSettings,
    *,
    excluding_quote: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The account's exposure in its credit currency, with its parts (see the module docstring)."""
    currency = credit_currency(account, settings)
    installments = Decimal(0)
    other: dict[str, Decimal] = {}
    for inst in await open_installments(session, account.id):
        amount = ledger.open_amount(inst)
        if inst.currency == currency:
            installments += amount
        else:
            other[inst.currency] = other.get(inst.currency, ZERO) + amount
    quotes_stmt = (
        select(col(Quote.currency), func.sum(col(Quote.total)))
        .join(Deal, col(Deal.id) == col(Quote.deal_id))
        .where(col(Deal.account_id) == account.id, col(Quote.status).in_(EXPOSURE_QUOTE_STATUSES))
        .group_by(col(Quote.currency))
    )
    if excluding_quote is not None:
        quotes_stmt = quotes_stmt.where(col(Quote.id) != excluding_quote)
    quotes = ZERO
    for cur, total in (await session.execute(quotes_stmt)).all():
        if cur == currency:
            quotes += Decimal(total)
        else:
            other[cur] = other.get(cur, ZERO) + Decimal(total)
    return {
        "currency": currency,
        "open_installments": round_money(installments, currency),
        "open_quotes": round_money(quotes, currency),
        "total": round_money(installments + quotes, currency),
        "not_counted": {c: round_money(a, c) for c, a in sorted(other.items())},
    }


async def check_acceptance(
    session: AsyncSession,
    principal: Principal,
    quote: Quote,
    account_id: uuid.UUID | None,
    *,
    override_reason: str | None,
) -> str | None:
    """Refuse (409) accepting a quote that puts the account's exposure over its credit limit,
    unless a manager or admin overrides with a reason (returned, to be recorded)."""
    if account_id is None:
        return None
    account = await session.get(Account, account_id)
    if account is None or account.credit_limit is None:
        return None
    settings = await ledger.settings_of(session, principal.org_id)
    currency = credit_currency(account, settings)
    if quote.currency != currency:
        return None  # not comparable without a conversion (none yet)
    current = await exposure(session, account, settings, excluding_quote=quote.id)
    after = current["total"] + Decimal(quote.total)
    limit = Decimal(account.credit_limit)
    if after <= limit:
        return None
    if override_reason:
        if principal.role not in (Role.manager, Role.admin):
            raise Forbidden("Only a manager or an admin can accept a quote over the credit limit.")
        return override_reason
    raise Conflict(
        f"Accepting this quote puts {account.name}'s exposure at {round_money(after, currency)} {currency}, "
        f"over its credit limit of {round_money(limit, currency)}; a manager may accept it with "
        "`credit_override_reason`.",
        extra={
            "exposure": str(round_money(current["total"], currency)),
            "exposure_after": str(round_money(after, currency)),
            "credit_limit": str(round_money(limit, currency)),
            "currency": currency,
        },
    )


async def _paid_history(session: AsyncSession, account_id: uuid.UUID) -> list[tuple[date, date]]:
    """(due date, day it was paid) of the account's paid installments: paid on the latest
    received_at among the confirmed payments allocated to it."""
    stmt = (
        select(col(Installment.due_date), func.max(col(Payment.received_at)))
        .join(Order, col(Order.id) == col(Installment.order_id))
        .join(PaymentAllocation, col(PaymentAllocation.installment_id) == col(Installment.id))
        .join(
            Payment,
            (col(Payment.id) == col(PaymentAllocation.payment_id))
            & (col(Payment.org_id) == col(PaymentAllocation.org_id)),
        )
        .where(
            col(Order.account_id) == account_id,
            col(Installment.status) == InstallmentStatus.paid,
            col(Payment.status) == PaymentStatus.confirmed,
        )
        .group_by(col(Installment.id), col(Installment.due_date))
    )
    return [(r[0], r[1]) for r in (await session.execute(stmt)).all()]


def _q(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


async def rating(
    session: AsyncSession, account: Account, settings: OrganisationSettings, today: date
) -> dict[str, Any]:
    """The account's rating with every factor, its score, weight and explanation."""
    history = await _paid_history(session, account.id)
    exp = await exposure(session, account, settings)
    currency = exp["currency"]
    overdue = sum(
        (
            ledger.open_amount(i)
            for i in await open_installments(session, account.id)
            if i.currency == currency and i.due_date < today
        ),
        ZERO,
    )
    on_time = sum(1 for due, paid in history if paid <= due)
    share = Decimal(on_time) / len(history) if history else None
    late_days = (
        Decimal(sum(max(0, (paid - due).days) for due, paid in history)) / len(history) if history else ZERO
    )
    exposure_total: Decimal = exp["total"]
    overdue_share = overdue / exposure_total if exposure_total > 0 else ZERO
    limit = Decimal(account.credit_limit) if account.credit_limit is not None else None
    utilisation = exposure_total / limit if limit else None
    scores = {
        "on_time_share": HUNDRED if share is None else share * HUNDRED,
        "mean_days_late": max(ZERO, HUNDRED - late_days * HUNDRED / 90),
        "current_overdue": max(ZERO, HUNDRED * (1 - overdue_share)),
        "utilisation": HUNDRED
        if utilisation is None
        else max(ZERO, min(HUNDRED, HUNDRED * (1 - (utilisation - Decimal("0.5")) / Decimal("0.5")))),
    }
    values: dict[str, Any] = {
        "on_time_share": None if share is None else _q(share * 100) / 100,
        "mean_days_late": _q(late_days),
        "current_overdue": str(round_money(overdue, currency)),
        "utilisation": None if utilisation is None else _q(utilisation * 100) / 100,
    }
    explanations = {
        "on_time_share": f"{on_time} of {len(history)} paid installments paid by their due date"
        if history
        else "no paid installments yet",
        "mean_days_late": f"paid installments were paid {_q(late_days)} days late on average",
        "current_overdue": f"{round_money(overdue, currency)} {currency} overdue "
        f"of {exposure_total} {currency} exposure",
        "utilisation": "no credit limit"
        if utilisation is None
        else f"exposure {exposure_total} of the {round_money(limit or ZERO, currency)} {currency} limit",
    }
    weights = settings.credit_rating_weights
    factors = []
    total = ZERO
    for name, score in scores.items():
        weighted = score * weights[name] / HUNDRED
        total += weighted
        factors.append(
            {
                "name": name,
                "value": values[name],
                "score": _q(score),
                "weight": weights[name],
                "weighted_score": _q(weighted),
                "explanation": explanations[name],
            }
        )
    grades = settings.credit_rating_grades
    grade = next((g for g in ("A", "B", "C") if total >= grades[g]), "D")
    return {
        "account_id": account.id,
        "credit_limit": None if limit is None else round_money(limit, currency),
        "currency": currency,
        "exposure": exp,
        "available": None if limit is None else round_money(limit - exposure_total, currency),
        "over_limit": bool(limit is not None and exposure_total > limit),
        "rating": grade,
        "score": _q(total),
        "previous_rating": account.credit_rating_previous,
        "stored_rating": account.credit_rating,
        "factors": factors,
        "weights": weights,
        "grades": grades,
        "legal_notice": account.legal_notice,
        "as_of": today,
    }


async def credit_report(session: AsyncSession, principal: Principal, account_id: uuid.UUID) -> dict[str, Any]:
    """GET /v1/accounts/{id}/credit: limit, exposure, rating with its factors and weights."""
    account = await visible_account(session, principal, account_id)
    settings = await ledger.settings_of(session, principal.org_id)
    report = await rating(session, account, settings, ledger.local_today(settings))
    report["credit_balance"] = await account_credit(session, account.id)
    return report


def worse(new: str, old: str | None) -> bool:
    """Whether rating `new` is below `old`."""
    return old in GRADES and new in GRADES and GRADES.index(new) > GRADES.index(old or "A")
