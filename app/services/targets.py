"""Sales targets (销售目标): per user, team or the organisation, per month, quarter or year.

A team's target for a period is the one set for the team, else the sum of its members' targets;
the organisation's is the one set for it, else the sum of every user's. Metrics count the targets
whose periods lie within the asked period (start ≥ from and end ≤ to).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from app.models.common import Role
from app.models.metrics import SalesTarget, SalesTargetCreate, SalesTargetUpdate, TargetPeriod
from app.models.organisation import Organisation
from app.models.user import Team, User
from app.money import fits_currency
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit
from app.services.common import apply_changes, snapshot
from app.services.metrics.common import fetch

AUDITED = ["user_id", "team_id", "period", "period_start", "amount", "currency", "count"]


def _invalid(field: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError(field=field, code=code, message=message)])


def period_end(period: TargetPeriod, start: date) -> date:
    """The exclusive end of a month, quarter or year starting at `start` (which must be its first day)."""
    if start.day != 1:
        raise _invalid("period_start", "not_period_start", "a period starts on the first day of a month")
    if period == TargetPeriod.month:
        months = 1
    elif period == TargetPeriod.quarter:
        if (start.month - 1) % 3:
            raise _invalid(
                "period_start", "not_period_start", "a quarter starts in January, April, July or October"
            )
        months = 3
    else:
        if start.month != 1:
            raise _invalid("period_start", "not_period_start", "a year starts on 1 January")
        months = 12
    month = start.month - 1 + months
    return date(start.year + month // 12, month % 12 + 1, 1)


def _can_write(principal: Principal) -> None:
    if principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers set targets.")


async def _check_scope(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None, team_id: uuid.UUID | None
) -> None:
    if user_id is not None:
        user = (await session.execute(select(User).where(col(User.id) == user_id))).scalar_one_or_none()
        if user is None:
            raise _invalid("user_id", "not_found", "no such user")
        if principal.role == Role.manager and (
            principal.team_id is None or user.team_id != principal.team_id
        ):
            raise Forbidden("Managers set targets for their own team's members.")
    elif team_id is not None:
        team = (await session.execute(select(col(Team.id)).where(col(Team.id) == team_id))).first()
        if team is None:
            raise _invalid("team_id", "not_found", "no such team")
        if principal.role == Role.manager and team_id != principal.team_id:
            raise Forbidden("Managers set their own team's target.")
    elif principal.role != Role.admin:
        raise Forbidden("Only admins set the organisation's target.")


async def create_target(session: AsyncSession, principal: Principal, data: SalesTargetCreate) -> SalesTarget:
    """A target for a user, a team or the organisation; one per scope, period kind and start (409)."""
    _can_write(principal)
    await _check_scope(session, principal, data.user_id, data.team_id)
    end = period_end(data.period, data.period_start)
    currency = data.currency
    if currency is None:
        org = await session.get(Organisation, principal.org_id)
        currency = org.typed_settings().base_currency if org else "USD"
    if not fits_currency(data.amount, currency):
        raise _invalid(
            "amount", "too_many_decimals", f"{currency} amounts have at most its minor-unit digits"
        )
    existing = (
        await session.execute(
            select(col(SalesTarget.id)).where(
                col(SalesTarget.user_id).is_(None)
                if data.user_id is None
                else col(SalesTarget.user_id) == data.user_id,
                col(SalesTarget.team_id).is_(None)
                if data.team_id is None
                else col(SalesTarget.team_id) == data.team_id,
                col(SalesTarget.period) == data.period.value,
                col(SalesTarget.period_start) == data.period_start,
            )
        )
    ).first()
    if existing is not None:
        raise Conflict("A target for this scope and period exists; change it instead.")
    target = SalesTarget(
        user_id=data.user_id,
        team_id=data.team_id,
        period=data.period,
        period_start=data.period_start,
        period_end=end,
        amount=data.amount,
        currency=currency,
        count=data.count,
    )
    session.add(target)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:  # the user or team went away meanwhile
        raise _invalid("user_id", "not_found", "no such user or team") from exc
    audit.record(
        session,
        actor=principal,
        entity="target",
        entity_id=target.id,
        action="create",
        changes=snapshot(target, AUDITED),
    )
    return target


async def get_target(session: AsyncSession, target_id: uuid.UUID) -> SalesTarget:
    """One target (every member reads targets)."""
    # The primary key is (org_id, id); the session's organisation scope supplies org_id.
    stmt = select(SalesTarget).where(col(SalesTarget.id) == target_id)
    target = (await session.execute(stmt)).scalar_one_or_none()
    if target is None:
        raise NotFound(f"No target with id {target_id}.")
    return target


async def update_target(
    session: AsyncSession,
    principal: Principal,
    target_id: uuid.UUID,
    data: SalesTargetUpdate,
    *,
    expected_version: int | None,
) -> SalesTarget:
    """Change a target's amount, currency or count."""
    _can_write(principal)
    target = await get_target(session, target_id)
    await _check_scope(session, principal, target.user_id, target.team_id)
    changes = data.changes()
    currency = changes.get("currency", target.currency)
    if not fits_currency(Decimal(changes.get("amount", target.amount)), currency):
        raise _invalid(
            "amount", "too_many_decimals", f"{currency} amounts have at most its minor-unit digits"
        )
    diff = apply_changes(target, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session, actor=principal, entity="target", entity_id=target.id, action="update", changes=diff
        )
        await session.flush()
    return target


async def delete_target(session: AsyncSession, principal: Principal, target_id: uuid.UUID) -> None:
    """Remove a target."""
    _can_write(principal)
    target = await get_target(session, target_id)
    await _check_scope(session, principal, target.user_id, target.team_id)
    audit.record(
        session,
        actor=principal,
        entity="target",
        entity_id=target.id,
        action="delete",
        changes=snapshot(target, AUDITED),
    )
    await session.delete(target)
    await session.flush()


async def list_targets(
    session: AsyncSession,
    page: PageParams,
    *,
    user_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    period_from: date | None = None,
    period_to: date | None = None,
) -> tuple[list[SalesTarget], str | None]:
    """Targets, oldest period first."""
    stmt = select(SalesTarget)
    if user_id is not None:
        stmt = stmt.where(col(SalesTarget.user_id) == user_id)
    if team_id is not None:
        stmt = stmt.where(col(SalesTarget.team_id) == team_id)
    if period_from is not None:
        stmt = stmt.where(col(SalesTarget.period_start) >= period_from)
    if period_to is not None:
        stmt = stmt.where(col(SalesTarget.period_end) <= period_to)
    return await paginate(
        session,
        stmt,
        page,
        id_column=col(SalesTarget.id),
        sortable={"period_start": col(SalesTarget.period_start)},
        default_sort="period_start",
    )


# --- what metrics read ------------------------------------------------------------------------


async def targets_within(
    session: AsyncSession, org_id: uuid.UUID, start: date, end: date
) -> list[tuple[uuid.UUID | None, uuid.UUID | None, str, Decimal]]:
    """(user_id, team_id, currency, amount) of every target lying within [start, end)."""
    rows = await fetch(
        session,
        "SELECT user_id, team_id, currency, amount FROM sales_targets "
        "WHERE org_id = :org_id AND period_start >= :start AND period_end <= :end",
        {"org_id": org_id, "start": start, "end": end},
    )
    return [(r[0], r[1], r[2], Decimal(r[3])) for r in rows]


def user_targets(
    targets: list[tuple[uuid.UUID | None, uuid.UUID | None, str, Decimal]],
) -> dict[uuid.UUID, dict[str, Decimal]]:
    """Per user: Σ of their targets per currency."""
    out: dict[uuid.UUID, dict[str, Decimal]] = defaultdict(dict)
    for user_id, _, currency, amount in targets:
        if user_id is not None:
            out[user_id][currency] = out[user_id].get(currency, Decimal(0)) + amount
    return out


def scope_target(
    targets: list[tuple[uuid.UUID | None, uuid.UUID | None, str, Decimal]],
    *,
    user_id: uuid.UUID | None,
    team_id: uuid.UUID | None,
    members: set[uuid.UUID],
) -> dict[str, Decimal]:
    """Per currency: the user's targets; the team's set target, else its members'; the organisation's
    set target, else every user's."""

    def total(rows: list[tuple[uuid.UUID | None, uuid.UUID | None, str, Decimal]]) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for _, _, currency, amount in rows:
            out[currency] = out.get(currency, Decimal(0)) + amount
        return out

    if user_id is not None:
        return total([t for t in targets if t[0] == user_id])
    if team_id is not None:
        own = [t for t in targets if t[1] == team_id]
        return total(own) if own else total([t for t in targets if t[0] in members])
    org = [t for t in targets if t[0] is None and t[1] is None]
    return total(org) if org else total([t for t in targets if t[0] is not None])
