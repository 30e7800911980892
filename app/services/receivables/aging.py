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
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Subquery, and_, case, cast, func, literal, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.account import Account
from app.models.payment import Payment, PaymentAllocation, PaymentStatus
from app.models.receivable import Installment, Order
from app.models.user import Team, User
from app.money import round_money
from app.security import Principal
from app.services.receivables import ledger
from app.services.receivables.access import order_clause

ZERO = Decimal(0)
DEFINITION_VERSION = 1


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


def open_amounts(
    principal: Principal,
    *,
    timezone: str,
    as_of: date,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    currency: str | None = None,
) -> Subquery:
    """Per installment the caller may see that existed and was open as of `as_of`: its open
    amount then, days past due, currency, account, owner and the owner's team."""
    paid = paid_as_of(as_of)
    written_off = case(
        (col(Installment.written_off_on) <= as_of, col(Installment.written_off_amount)), else_=ZERO
    )
    open_amount = col(Installment.amount) - func.coalesce(paid.c.paid, ZERO) - written_off
    stmt: Any = (
        select(
            col(Installment.id).label("installment_id"),
            col(Installment.currency).label("currency"),
            open_amount.label("open_amount"),
            (literal(as_of, type_=Date) - col(Installment.due_date)).label("days_past_due"),
            col(Order.account_id).label("account_id"),
            col(Order.owner_id).label("owner_id"),
            col(User.team_id).label("team_id"),
        )
        .join(Order, col(Order.id) == col(Installment.order_id))
        .outerjoin(paid, paid.c.installment_id == col(Installment.id))
        .outerjoin(User, col(User.id) == col(Order.owner_id))
        .where(
            cast(func.timezone(timezone, col(Order.ordered_at)), Date) <= as_of,
            open_amount > 0,
            order_clause(principal),
        )
    )
    if owner_id is not None:
        stmt = stmt.where(col(Order.owner_id) == owner_id)
    if team_id is not None:
        stmt = stmt.where(col(User.team_id) == team_id)
    if account_id is not None:
        stmt = stmt.where(col(Order.account_id) == account_id)
    if currency is not None:
        stmt = stmt.where(col(Installment.currency) == currency)
    subquery: Subquery = stmt.subquery("open_amounts")
    return subquery


def group_column(items: Subquery, group_by: str) -> tuple[Any, list[Any]]:
    """What an open-amounts subquery is selected and grouped by: the group's column (NULL, and
    nothing to group by, for no grouping)."""
    if group_by in ("account", "owner", "team"):
        column = items.c[f"{group_by}_id"]
        return column, [column]
    return literal_column("NULL"), []


async def group_names(session: AsyncSession, group_by: str, ids: set[str]) -> dict[str, str]:
    """Names of the accounts, owners or teams with these ids."""
    columns: dict[str, tuple[Any, Any]] = {
        "owner": (col(User.id), col(User.name)),
        "team": (col(Team.id), col(Team.name)),
        "account": (col(Account.id), col(Account.name)),
    }
    if group_by not in columns or not ids:
        return {}
    id_column, name_column = columns[group_by]
    rows = await session.execute(
        select(id_column, name_column).where(id_column.in_([uuid.UUID(i) for i in ids]))
    )
    return {str(r[0]): r[1] for r in rows.all()}


def bucket_names(edges: list[int]) -> list[str]:
    """current, then 1-e1, e1+1-e2, …, and last+ (e.g. 1-30, 31-60, 61-90, 90+)."""
    names = ["current"]
    low = 1
    for edge in edges:
        names.append(f"{low}-{edge}")
        low = edge + 1
    names.append(f"{edges[-1]}+")
    return names


def bucket_case(days: Any, edges: list[int]) -> Any:
    """The bucket name of a days-past-due expression, in SQL."""
    names = bucket_names(edges)
    whens = [(days <= 0, names[0])] + [(days <= edge, names[i + 1]) for i, edge in enumerate(edges)]
    return case(*whens, else_=names[-1])


async def aging(
    session: AsyncSession,
    principal: Principal,
    *,
    as_of: date | None,
    group_by: str,
    currency: str | None = None,
) -> dict[str, Any]:
    """The aging report: per group and currency the open amount per bucket, and totals per
    currency; summed in SQL, rounded to the minor unit only here."""
    settings = await ledger.settings_of(session, principal.org_id)
    day = as_of or ledger.local_today(settings)
    edges = settings.aging_bucket_edges
    names = bucket_names(edges)
    items = open_amounts(principal, timezone=settings.timezone, as_of=day, currency=currency)
    key, grouping = group_column(items, group_by)
    bucket = bucket_case(items.c.days_past_due, edges)
    rows_sql = (
        await session.execute(
            select(key, items.c.currency, bucket, func.sum(items.c.open_amount)).group_by(
                *grouping, items.c.currency, bucket
            )
        )
    ).all()
    groups: dict[tuple[str | None, str], dict[str, Decimal]] = {}
    totals: dict[str, dict[str, Decimal]] = {}
    for gid, cur, name, amount in rows_sql:
        gkey = (None if gid is None else str(gid), cur)
        groups.setdefault(gkey, dict.fromkeys(names, ZERO))[name] += Decimal(amount)
        totals.setdefault(cur, dict.fromkeys(names, ZERO))[name] += Decimal(amount)
    labels = await group_names(session, group_by, {g for g, _ in groups if g})

    def shaped(amounts: dict[str, Decimal], cur: str) -> dict[str, Any]:
        rounded = {n: round_money(a, cur) for n, a in amounts.items()}
        return {"buckets": rounded, "total": round_money(sum(amounts.values(), ZERO), cur)}

    rows = sorted(
        (
            {"group_id": gid, "group_name": labels.get(gid or ""), "currency": cur} | shaped(amounts, cur)
            for (gid, cur), amounts in groups.items()
        ),
        key=lambda r: (r["group_name"] or "", r["group_id"] or "", r["currency"]),
    )
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
