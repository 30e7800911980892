"""Receivables aging (账龄分析) as of any date, reconstructed from what was dated on or before it.

The open amount of an installment as of local date D (DESIGN §7, "open amount as in aging"):
- the installment exists from its order's `ordered_at` (local date ≤ D);
- minus the allocations of payments that are confirmed now (or were, and are reversed), counted
  from the payment's `received_at` (≤ D) even when confirmed later, and no longer counted from
  the payment's `reversed_on` (≤ D);
- minus the written-off amount from its `written_off_on` (≤ D).
Days past due = D − due date; the buckets are current (not yet due, ≤ 0) and then one per
interval of the organisation's `aging_bucket_edges` (default 30, 60, 90: 1-30, 31-60, 61-90,
90+). Amounts are summed per group and currency, exactly, and rounded to the currency's minor
unit only in the response.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, and_, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.account import Account
from app.models.payment import Payment, PaymentAllocation, PaymentStatus
from app.models.receivable import Installment, Order
from app.models.user import Team, User
from app.money import round_money
from app.security import Principal
from app.services.receivables import ledger
from app.services.receivables.orders import order_clause

ZERO = Decimal(0)
DEFINITION_VERSION = 1


@dataclass(frozen=True)
class OpenItem:
    """One installment as of a date: what was open then and how late it was."""

    installment_id: uuid.UUID
    currency: str
    amount: Decimal
    open_amount: Decimal
    due_date: date
    days_past_due: int
    account_id: uuid.UUID | None
    account_name: str | None
    owner_id: uuid.UUID | None
    owner_name: str | None
    team_id: uuid.UUID | None


def paid_as_of(as_of: date) -> Any:
    """Σ applied amounts per installment of the allocations that count as of `as_of`."""
    return (
        select(
            col(PaymentAllocation.installment_id).label("installment_id"),
            func.sum(col(PaymentAllocation.applied_amount)).label("paid"),
        )
        .join(
            Payment,
            and_(
                col(Payment.id) == col(PaymentAllocation.payment_id),
                col(Payment.org_id) == col(PaymentAllocation.org_id),
            ),
        )
        .where(
            col(Payment.status).in_([PaymentStatus.confirmed, PaymentStatus.reversed]),
            col(Payment.received_at) <= as_of,
            or_(col(Payment.reversed_on).is_(None), col(Payment.reversed_on) > as_of),
        )
        .group_by(col(PaymentAllocation.installment_id))
        .subquery()
    )


async def open_items(
    session: AsyncSession,
    principal: Principal,
    *,
    as_of: date,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    currency: str | None = None,
) -> list[OpenItem]:
    """Every installment the caller may see that existed and was open as of `as_of`."""
    settings = await ledger.settings_of(session, principal.org_id)
    paid = paid_as_of(as_of)
    written_off = case(
        (col(Installment.written_off_on) <= as_of, col(Installment.written_off_amount)), else_=ZERO
    )
    open_amount = col(Installment.amount) - func.coalesce(paid.c.paid, ZERO) - written_off
    stmt = (
        select(
            col(Installment.id),
            col(Installment.currency),
            col(Installment.amount),
            open_amount.label("open_amount"),
            col(Installment.due_date),
            col(Order.account_id),
            col(Account.name),
            col(Order.owner_id),
            col(User.name),
            col(User.team_id),
        )
        .join(Order, col(Order.id) == col(Installment.order_id))
        .outerjoin(paid, paid.c.installment_id == col(Installment.id))
        .outerjoin(Account, col(Account.id) == col(Order.account_id))
        .outerjoin(User, col(User.id) == col(Order.owner_id))
        .where(
            cast(func.timezone(settings.timezone, col(Order.ordered_at)), Date) <= as_of,
            open_amount > 0,
            order_clause(principal),
        )
        .order_by(col(Installment.due_date), col(Installment.id))
    )
    if owner_id is not None:
        stmt = stmt.where(col(Order.owner_id) == owner_id)
    if team_id is not None:
        stmt = stmt.where(col(User.team_id) == team_id)
    if account_id is not None:
        stmt = stmt.where(col(Order.account_id) == account_id)
    if currency is not None:
        stmt = stmt.where(col(Installment.currency) == currency)
    return [
        OpenItem(
            installment_id=r[0],
            currency=r[1],
            amount=Decimal(r[2]),
            open_amount=Decimal(r[3]),
            due_date=r[4],
            days_past_due=(as_of - r[4]).days,
            account_id=r[5],
            account_name=r[6],
            owner_id=r[7],
            owner_name=r[8],
            team_id=r[9],
        )
        for r in (await session.execute(stmt)).all()
    ]


def bucket_names(edges: list[int]) -> list[str]:
    """current, then 1-e1, e1+1-e2, …, and last+ (e.g. 1-30, 31-60, 61-90, 90+)."""
    names = ["current"]
    low = 1
    for edge in edges:
        names.append(f"{low}-{edge}")
        low = edge + 1
    names.append(f"{edges[-1]}+")
    return names


def bucket_of(days_past_due: int, edges: list[int]) -> str:
    """The bucket of an installment that many days past due."""
    names = bucket_names(edges)
    if days_past_due <= 0:
        return names[0]
    for index, edge in enumerate(edges):
        if days_past_due <= edge:
            return names[index + 1]
    return names[-1]


def _group_key(item: OpenItem, group_by: str) -> tuple[str | None, str | None]:
    if group_by == "account":
        return (str(item.account_id) if item.account_id else None, item.account_name)
    if group_by == "owner":
        return (str(item.owner_id) if item.owner_id else None, item.owner_name)
    if group_by == "team":
        return (str(item.team_id) if item.team_id else None, None)
    return (None, None)


async def aging(
    session: AsyncSession,
    principal: Principal,
    *,
    as_of: date | None,
    group_by: str,
    currency: str | None = None,
) -> dict[str, Any]:
    """The aging report: per group and currency the open amount per bucket, and totals per currency."""
    settings = await ledger.settings_of(session, principal.org_id)
    day = as_of or ledger.local_today(settings)
    edges = settings.aging_bucket_edges
    names = bucket_names(edges)
    items = await open_items(session, principal, as_of=day, currency=currency)
    groups: dict[tuple[str | None, str | None, str], dict[str, Decimal]] = {}
    totals: dict[str, dict[str, Decimal]] = {}
    for item in items:
        gid, gname = _group_key(item, group_by)
        bucket = bucket_of(item.days_past_due, edges)
        row = groups.setdefault((gid, gname, item.currency), dict.fromkeys(names, ZERO))
        row[bucket] += item.open_amount
        total = totals.setdefault(item.currency, dict.fromkeys(names, ZERO))
        total[bucket] += item.open_amount

    def shaped(amounts: dict[str, Decimal], cur: str) -> dict[str, Any]:
        rounded = {n: round_money(a, cur) for n, a in amounts.items()}
        return {"buckets": rounded, "total": round_money(sum(amounts.values(), ZERO), cur)}

    if group_by == "team":
        team_ids = [uuid.UUID(gid) for gid, _, _ in groups if gid]
        team_names: dict[uuid.UUID, str] = {
            row[0]: row[1]
            for row in (
                await session.execute(select(col(Team.id), col(Team.name)).where(col(Team.id).in_(team_ids)))
            ).all()
        }
        groups = {
            (gid, team_names.get(uuid.UUID(gid)) if gid else None, cur): a
            for (gid, _, cur), a in groups.items()
        }
    rows = [
        {"group_id": gid, "group_name": gname, "currency": cur} | shaped(amounts, cur)
        for (gid, gname, cur), amounts in sorted(
            groups.items(), key=lambda kv: (kv[0][1] or "", kv[0][0] or "", kv[0][2])
        )
    ]
    return {
        "as_of": day,
        "group_by": group_by,
        "bucket_names": names,
        "bucket_edges": edges,
        "rows": rows if group_by != "none" else [],
        "totals": [{"currency": cur} | shaped(amounts, cur) for cur, amounts in sorted(totals.items())],
        "definition_version": DEFINITION_VERSION,
        "filters": {"as_of": day, "group_by": group_by, "currency": currency},
    }


def aging_csv_rows(report: dict[str, Any]) -> list[list[str]]:
    """The same report as CSV rows: a header, the group rows, then one TOTAL row per currency."""
    names: list[str] = report["bucket_names"]
    out = [["group_by", "group_id", "group_name", "currency", *names, "total"]]
    for row in report["rows"]:
        out.append(
            [
                report["group_by"],
                row["group_id"] or "",
                row["group_name"] or "",
                row["currency"],
                *(str(row["buckets"][n]) for n in names),
                str(row["total"]),
            ]
        )
    for row in report["totals"]:
        out.append(
            ["TOTAL", "", "", row["currency"], *(str(row["buckets"][n]) for n in names), str(row["total"])]
        )
    return out
