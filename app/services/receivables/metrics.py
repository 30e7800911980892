"""Collections metrics (DESIGN §7, version 1): due, collected, collection rate (回款率), overdue,
DSO, per currency, for a half-open period [from, to) of local dates, by owner, team, account or
month. `DEFINITIONS` is what `GET /v1/metrics/definitions` publishes for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import and_, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import FieldError, ValidationFailed
from app.models.payment import Payment, PaymentAllocation, PaymentStatus
from app.models.receivable import Installment, Order
from app.models.user import User
from app.money import round_money
from app.security import Principal
from app.services.receivables import ledger
from app.services.receivables.access import order_clause
from app.services.receivables.aging import DEFINITION_VERSION, group_column, group_names, open_amounts

ZERO = Decimal(0)
GROUPS = ("none", "owner", "team", "account", "month")

DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "collections.due",
        "formula": "Σ amount of installments whose due_date is in [from, to)",
        "unit": "money per currency",
        "counted": "installments of orders the caller may see, due in the period",
        "excluded": "written-off installments (their order was cancelled)",
        "version": DEFINITION_VERSION,
    },
    {
        "name": "collections.collected",
        "formula": "Σ allocations of confirmed payments with received_at in [from, to) − Σ allocations of "
        "payments reversed with reversed_on in [from, to)",
        "unit": "money per currency (the installment's)",
        "counted": "allocations from the day the payment was received, even when confirmed later",
        "excluded": "pending and rejected payments; unallocated credit",
        "version": DEFINITION_VERSION,
    },
    {
        "name": "collections.collection_rate",
        "formula": "collected / due, half-up to 4 decimals",
        "unit": "fraction",
        "counted": "per currency",
        "excluded": "null when due is 0",
        "version": DEFINITION_VERSION,
    },
    {
        "name": "collections.overdue",
        "formula": "Σ open amount as of to − 1 day of installments due before that day",
        "unit": "money per currency",
        "counted": "open amount as in aging: amount − allocations counted by then − write-offs dated by then",
        "excluded": "installments of orders made after that day",
        "version": DEFINITION_VERSION,
    },
    {
        "name": "collections.dso",
        "formula": "open receivables as of to − 1 day / due × days in [from, to), half-up to 2 decimals",
        "unit": "days",
        "counted": "open receivables: the open amount of every installment existing on that day, due or not",
        "excluded": "null when due is 0",
        "version": DEFINITION_VERSION,
    },
]


def _rate(numerator: Decimal, denominator: Decimal, places: str) -> Decimal | None:
    if denominator == 0:
        return None
    return (numerator / denominator).quantize(Decimal(places), rounding=ROUND_HALF_UP)


def _months(start: date, end: date) -> Iterator[tuple[str, date, date]]:
    cursor = start
    while cursor < end:
        nxt = (cursor.replace(day=1) + timedelta(days=32)).replace(day=1)
        yield cursor.strftime("%Y-%m"), cursor, min(nxt, end)
        cursor = nxt


def _group_column(group_by: str) -> Any:
    return {"owner": col(Order.owner_id), "team": col(User.team_id), "account": col(Order.account_id)}.get(
        group_by
    )


def _key(group_by: str) -> Any:
    """The group's column, or NULL for no grouping."""
    column = _group_column(group_by)
    return column if column is not None else literal_column("NULL")


def _columns(group_by: str) -> list[Any]:
    """What to group by: the group's column (if any) and the currency."""
    column = _group_column(group_by)
    return [col(Installment.currency)] if column is None else [column, col(Installment.currency)]


async def _due(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    group_by: str,
    filters: dict[str, Any],
) -> dict[tuple[str | None, str], Decimal]:
    columns = _columns(group_by)
    stmt = (
        select(_key(group_by), col(Installment.currency), func.sum(col(Installment.amount)))
        .join(Order, col(Order.id) == col(Installment.order_id))
        .outerjoin(User, col(User.id) == col(Order.owner_id))
        .where(
            col(Installment.due_date) >= start,
            col(Installment.due_date) < end,
            col(Installment.written_off_on).is_(None),
            order_clause(principal),
            *_filters(filters),
        )
        .group_by(*columns)
    )
    return {(_s(r[0]), r[1]): Decimal(r[2]) for r in (await session.execute(stmt)).all()}


async def _collected(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    group_by: str,
    filters: dict[str, Any],
) -> dict[tuple[str | None, str], Decimal]:
    columns = _columns(group_by)
    out: dict[tuple[str | None, str], Decimal] = {}
    for date_column, statuses, sign in (
        (col(Payment.received_at), [PaymentStatus.confirmed, PaymentStatus.reversed], 1),
        (col(Payment.reversed_on), [PaymentStatus.reversed], -1),
    ):
        stmt = (
            select(_key(group_by), col(Installment.currency), func.sum(col(PaymentAllocation.applied_amount)))
            .select_from(PaymentAllocation)
            .join(
                Payment,
                and_(
                    col(Payment.id) == col(PaymentAllocation.payment_id),
                    col(Payment.org_id) == col(PaymentAllocation.org_id),
                ),
            )
            .join(Installment, col(Installment.id) == col(PaymentAllocation.installment_id))
            .join(Order, col(Order.id) == col(Installment.order_id))
            .outerjoin(User, col(User.id) == col(Order.owner_id))
            .where(
                col(Payment.status).in_(statuses),
                date_column >= start,
                date_column < end,
                order_clause(principal),
                *_filters(filters),
            )
            .group_by(*columns)
        )
        for r in (await session.execute(stmt)).all():
            k = (_s(r[0]), r[1])
            out[k] = out.get(k, ZERO) + sign * Decimal(r[2])
    return out


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def _filters(filters: dict[str, Any]) -> list[Any]:
    out = []
    if filters.get("owner_id"):
        out.append(col(Order.owner_id) == filters["owner_id"])
    if filters.get("team_id"):
        out.append(col(User.team_id) == filters["team_id"])
    if filters.get("account_id"):
        out.append(col(Order.account_id) == filters["account_id"])
    return out


async def _open_as_of(
    session: AsyncSession, principal: Principal, day: date, group_by: str, filters: dict[str, Any]
) -> tuple[dict[tuple[str | None, str], Decimal], dict[tuple[str | None, str], Decimal]]:
    """(open receivables, overdue) per (group, currency) as of the end of local `day`: the open
    amounts of aging, summed in SQL."""
    settings = await ledger.settings_of(session, principal.org_id)
    items = open_amounts(
        principal,
        timezone=settings.timezone,
        as_of=day,
        owner_id=filters.get("owner_id"),
        team_id=filters.get("team_id"),
        account_id=filters.get("account_id"),
    )
    key, grouping = group_column(items, group_by)
    rows = await session.execute(
        select(
            key,
            items.c.currency,
            func.sum(items.c.open_amount),
            func.sum(case((items.c.days_past_due > 0, items.c.open_amount), else_=ZERO)),
        ).group_by(*grouping, items.c.currency)
    )
    receivables: dict[tuple[str | None, str], Decimal] = {}
    overdue: dict[tuple[str | None, str], Decimal] = {}
    for gid, cur, total, late in rows.all():
        receivables[(_s(gid), cur)] = Decimal(total)
        overdue[(_s(gid), cur)] = Decimal(late)
    return receivables, overdue


async def _period(
    session: AsyncSession,
    principal: Principal,
    start: date,
    end: date,
    group_by: str,
    filters: dict[str, Any],
) -> list[dict[str, Any]]:
    key_by = "none" if group_by == "month" else group_by
    due = await _due(session, principal, start, end, key_by, filters)
    collected = await _collected(session, principal, start, end, key_by, filters)
    receivables, overdue = await _open_as_of(session, principal, end - timedelta(days=1), key_by, filters)
    days = Decimal((end - start).days)
    rows = []
    for gid, currency in sorted(
        set(due) | set(collected) | set(receivables), key=lambda k: (k[0] or "", k[1])
    ):
        k = (gid, currency)
        d, c = due.get(k, ZERO), collected.get(k, ZERO)
        open_total, late = receivables.get(k, ZERO), overdue.get(k, ZERO)
        rows.append(
            {
                "group_id": gid,
                "currency": currency,
                "due": round_money(d, currency),
                "collected": round_money(c, currency),
                "collection_rate": _rate(c, d, "0.0001"),
                "overdue": round_money(late, currency),
                "open_receivables": round_money(open_total, currency),
                "dso_days": None
                if d == 0
                else (open_total / d * days).quantize(Decimal("0.01"), ROUND_HALF_UP),
            }
        )
    return rows


async def collections(
    session: AsyncSession,
    principal: Principal,
    *,
    start: date,
    end: date,
    group_by: str,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """GET /v1/metrics/collections (see DEFINITIONS)."""
    if end <= start:
        raise ValidationFailed(
            "`to` must be after `from`.",
            errors=[FieldError(field="to", code="empty_period", message="after from")],
        )
    if (end - start).days > 3660:
        raise ValidationFailed(
            "The period is too long.",
            errors=[FieldError(field="to", code="too_long", message="at most 10 years")],
        )
    filters = {"owner_id": owner_id, "team_id": team_id, "account_id": account_id}
    rows: list[dict[str, Any]] = []
    if group_by == "month":
        for label, s, e in _months(start, end):
            rows += [
                r | {"group_id": label} for r in await _period(session, principal, s, e, group_by, filters)
            ]
    elif group_by != "none":
        rows = await _period(session, principal, start, end, group_by, filters)
    totals = await _period(session, principal, start, end, "none", filters)
    names = await group_names(session, group_by, {r["group_id"] for r in rows if r["group_id"]})
    for r in rows:
        r["group_name"] = r["group_id"] if group_by == "month" else names.get(r["group_id"] or "")
    for t in totals:
        t.pop("group_id", None)
    return {
        "definition_version": DEFINITION_VERSION,
        "filters": {
            "from": start,
            "to": end,
            "group_by": group_by,
            "owner_id": owner_id,
            "team_id": team_id,
            "account_id": account_id,
        },
        "rows": rows,
        "totals": totals,
    }


CSV_COLUMNS = ["due", "collected", "collection_rate", "overdue", "open_receivables", "dso_days"]


def csv_rows(report: dict[str, Any]) -> list[list[str]]:
    """The report as CSV: the group rows, then a TOTAL row per currency."""

    def cell(v: Any) -> str:
        return "" if v is None else str(v)

    out = [["group_by", "group_id", "group_name", "currency", *CSV_COLUMNS]]
    group_by = report["filters"]["group_by"]
    for r in report["rows"]:
        out.append(
            [
                group_by,
                cell(r["group_id"]),
                cell(r["group_name"]),
                r["currency"],
                *(cell(r[c]) for c in CSV_COLUMNS),
            ]
        )
    for t in report["totals"]:
        out.append(["TOTAL", "", "", t["currency"], *(cell(t[c]) for c in CSV_COLUMNS)])
    return out
