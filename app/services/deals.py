"""Deals: CRUD, stage moves with exit criteria, won / lost / reopen, and their complete history.

Visibility (reads and writes alike; what a caller cannot see is a 404):
- admin: every deal of the organisation;
- manager: deals they own and deals owned by members of their team (users.team_id = their team);
- rep: deals they own;
- viewer: reads every deal, writes nothing (the scope check refuses viewers' writes with 403).
Quotes and orders inherit the visibility of their deal.

History is append-only and complete, because the metrics are SQL over it: every stage change is a
`deal_stage_history` row (creation counts as entering the first stage, from = null), and every
change of status, amount, currency, probability, expected close date or owner is a
`deal_field_history` row with the previous and the new value (creation records the initial values
with previous = null).
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, FieldError, Forbidden, InvalidTransition, NotFound, ValidationFailed
from app.models.account import Account, Contact
from app.models.base import utcnow
from app.models.common import Role
from app.models.deal import (
    TRACKED_FIELDS,
    CurrencyTotal,
    Deal,
    DealCreate,
    DealFieldHistory,
    DealHistoryEntry,
    DealStageHistory,
    DealStatus,
    DealUpdate,
    HistoryKind,
)
from app.models.organisation import Organisation
from app.models.pipeline import Pipeline, Stage, StageKind
from app.models.receivable import Order
from app.models.user import User
from app.money import fits_currency, plain_percent, round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit, outbox
from app.services import pipelines as pipelines_service
from app.services.common import check_version, get_or_404, snapshot

AUDITED = ["name", "pipeline_id", "stage_id", "owner_id", "amount", "currency", "status"]


def _invalid(field: str, code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[FieldError(field=field, code=code, message=message)])


# --- visibility -------------------------------------------------------------------------------


def visibility_clause(principal: Principal) -> ColumnElement[bool]:
    """The SQL condition on deals this principal may see (see the module docstring)."""
    if principal.role in (Role.admin, Role.viewer):
        return true()
    own = col(Deal.owner_id) == principal.user_id
    if principal.role == Role.manager and principal.team_id is not None:
        team = select(col(User.id)).where(col(User.team_id) == principal.team_id)
        return or_(own, col(Deal.owner_id).in_(team))
    return own


async def get_deal(
    session: AsyncSession, principal: Principal, deal_id: uuid.UUID, *, lock: bool = False
) -> Deal:
    """A deal the caller may see, else 404 (another organisation's or another owner's alike).

    `lock` holds the row until the transaction ends, so concurrent changes of one deal queue up
    and each history row starts where the previous one ended.
    """
    stmt = select(Deal).where(col(Deal.id) == deal_id, visibility_clause(principal))
    if lock:
        stmt = stmt.with_for_update(of=Deal)
    deal = (await session.execute(stmt)).scalar_one_or_none()
    if deal is None:
        raise NotFound(f"No deal with id {deal_id}.")
    return deal


async def _check_owner(session: AsyncSession, principal: Principal, owner_id: uuid.UUID) -> None:
    """Reps own their deals; managers give deals to their team; admins to anyone active."""
    owner = await session.get(User, owner_id)
    if owner is None or not owner.active:
        raise _invalid("owner_id", "not_found", "no such active user")
    if principal.is_admin or owner_id == principal.user_id:
        return
    if (
        principal.role == Role.manager
        and principal.team_id is not None
        and owner.team_id == principal.team_id
    ):
        return
    raise Forbidden(
        "You may give deals only to yourself" + (" or your team." if principal.role == Role.manager else ".")
    )


# --- history ---------------------------------------------------------------------------------


def _history_value(value: Any) -> Any:
    """Field values as JSON: money with its currency's digits, percentages plain, dates ISO."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _field_value(deal: Deal, name: str) -> Any:
    value = getattr(deal, name)
    if name == "amount" and value is not None:
        return round_money(Decimal(value), deal.currency)
    if name == "probability":
        return plain_percent(Decimal(value))
    return value


def _track(
    session: AsyncSession, principal: Principal | None, deal: Deal, before: dict[str, Any], at: datetime
) -> dict[str, Any]:
    """Append a field-history row for each tracked field that changed since `before`; return the diff."""
    diff: dict[str, Any] = {}
    for name in TRACKED_FIELDS:
        old, new = before.get(name), _field_value(deal, name)
        if old != new:
            old_json, new_json = _history_value(old), _history_value(new)
            diff[name] = [old_json, new_json]
            session.add(
                DealFieldHistory(
                    deal_id=deal.id,
                    field=name,
                    old_value=old_json,
                    new_value=new_json,
                    at=at,
                    by_user_id=principal.user_id if principal else None,
                )
            )
    return diff


def _tracked_values(deal: Deal) -> dict[str, Any]:
    return {name: _field_value(deal, name) for name in TRACKED_FIELDS}


def _touch(deal: Deal, at: datetime) -> None:
    deal.version += 1
    deal.updated_at = at
    deal.last_activity_at = at


# --- create, read, update ---------------------------------------------------------------------


async def _check_links(
    session: AsyncSession, account_id: uuid.UUID | None, contact_id: uuid.UUID | None
) -> None:
    if account_id is not None and await session.get(Account, account_id) is None:
        raise _invalid("account_id", "not_found", "no such account")
    if contact_id is not None and await session.get(Contact, contact_id) is None:
        raise _invalid("contact_id", "not_found", "no such contact")


def _check_amount(amount: Decimal | None, currency: str) -> None:
    if amount is not None and not fits_currency(amount, currency):
        raise _invalid(
            "amount", "too_many_decimals", f"{currency} amounts have at most the currency's minor-unit digits"
        )


async def _base_currency(session: AsyncSession, org_id: uuid.UUID) -> str:
    org = await session.get(Organisation, org_id)
    return org.typed_settings().base_currency if org else "USD"


async def create_deal(session: AsyncSession, principal: Principal, data: DealCreate) -> Deal:
    """A deal in the given (or the stage's, or the default) pipeline's given (or first) open stage.

    Lead conversion calls this with a DealCreate carrying `lead_id`, `account_id` and `contact_id`.
    """
    if data.pipeline_id is not None:
        pipeline = await get_or_404(session, Pipeline, data.pipeline_id, what="pipeline")
    elif data.stage_id is not None:
        stage_row = await session.get(Stage, data.stage_id)
        if stage_row is None:
            raise _invalid("stage_id", "not_found", "no such stage")
        pipeline = await get_or_404(session, Pipeline, stage_row.pipeline_id, what="pipeline")
    else:
        pipeline = await pipelines_service.default_pipeline(session)
    stages = await pipelines_service.live_stages(session, pipeline.id)
    if data.stage_id is not None:
        stage = next((s for s in stages if s.id == data.stage_id), None)
        if stage is None or stage.kind != StageKind.open:
            raise _invalid("stage_id", "not_an_open_stage", "an open stage of the deal's pipeline")
    else:
        stage = next(s for s in stages if s.kind == StageKind.open)
    owner_id = data.owner_id or principal.user_id
    await _check_owner(session, principal, owner_id)
    await _check_links(session, data.account_id, data.contact_id)
    currency = data.currency or await _base_currency(session, principal.org_id)
    _check_amount(data.amount, currency)
    now = utcnow()
    deal = Deal(
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        name=data.name,
        account_id=data.account_id,
        contact_id=data.contact_id,
        lead_id=data.lead_id,
        owner_id=owner_id,
        amount=data.amount,
        currency=currency,
        probability=data.probability if data.probability is not None else stage.probability,
        probability_overridden=data.probability is not None,
        expected_close_date=data.expected_close_date,
        attributes=data.attributes,
        stage_entered_at=now,
        last_activity_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(deal)
    await session.flush()
    session.add(
        DealStageHistory(
            deal_id=deal.id,
            pipeline_id=pipeline.id,
            from_stage_id=None,
            to_stage_id=stage.id,
            at=now,
            by_user_id=principal.user_id,
        )
    )
    _track(session, principal, deal, {}, now)
    audit.record(
        session,
        actor=principal,
        entity="deal",
        entity_id=deal.id,
        action="create",
        changes=snapshot(deal, AUDITED),
    )
    await outbox.emit(session, "deal.created", _payload(deal, principal))
    await session.flush()
    return deal


def _payload(deal: Deal, principal: Principal | None, **extra: Any) -> dict[str, Any]:
    return {
        "deal_id": deal.id,
        "pipeline_id": deal.pipeline_id,
        "stage_id": deal.stage_id,
        "status": deal.status,
        "owner_id": deal.owner_id,
        "amount": None if deal.amount is None else str(round_money(Decimal(deal.amount), deal.currency)),
        "currency": deal.currency,
        "by_user_id": principal.user_id if principal else None,
        **extra,
    }


async def update_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    data: DealUpdate,
    *,
    expected_version: int | None,
) -> Deal:
    """Change a deal's fields (not its stage); tracked fields go to the field history."""
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    changes = data.model_dump(exclude_unset=True)
    for name in ("name", "currency", "attributes", "owner_id"):
        if name in changes and changes[name] is None:
            raise _invalid(name, "null", f"{name} may not be null")
    if "owner_id" in changes and changes["owner_id"] != deal.owner_id:
        await _check_owner(session, principal, changes["owner_id"])
    await _check_links(session, changes.get("account_id"), changes.get("contact_id"))
    if "probability" in changes:
        if changes["probability"] is None:
            stage = await get_or_404(session, Stage, deal.stage_id, what="stage")
            changes["probability"] = stage.probability
            changes["probability_overridden"] = False
        else:
            changes["probability_overridden"] = True
    currency = changes.get("currency", deal.currency)
    _check_amount(changes.get("amount", deal.amount), currency)
    before = _tracked_values(deal)
    audit_diff: dict[str, Any] = {}
    for name, value in changes.items():
        old = getattr(deal, name)
        if old != value:
            audit_diff[name] = [_history_value(old), _history_value(value)]
            setattr(deal, name, value)
    if audit_diff:
        now = utcnow()
        _touch(deal, now)
        _track(session, principal, deal, before, now)
        audit.record(
            session, actor=principal, entity="deal", entity_id=deal.id, action="update", changes=audit_diff
        )
        await session.flush()
    return deal


async def delete_deal(
    session: AsyncSession, principal: Principal, deal_id: uuid.UUID, *, expected_version: int | None
) -> Deal:
    """Erase a deal with its quotes and history (a deal with an order cannot be erased: 409).

    Prefer losing a deal to deleting it: a deleted deal leaves the funnel metrics.
    """
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    has_order = (await session.execute(select(col(Order.id)).where(col(Order.deal_id) == deal.id))).first()
    if has_order is not None:
        raise Conflict("The deal has an order; it cannot be deleted.")
    audit.record(
        session,
        actor=principal,
        entity="deal",
        entity_id=deal.id,
        action="delete",
        changes=snapshot(deal, AUDITED),
    )
    await outbox.emit(session, "deal.deleted", _payload(deal, principal))
    await session.delete(deal)
    await session.flush()
    return deal


async def set_amount(
    session: AsyncSession, principal: Principal | None, deal: Deal, amount: Decimal, currency: str
) -> None:
    """Set amount and currency from elsewhere (a primary quote), with field history."""
    before = _tracked_values(deal)
    if deal.amount == amount and deal.currency == currency:
        return
    deal.amount, deal.currency = amount, currency
    now = utcnow()
    _touch(deal, now)
    _track(session, principal, deal, before, now)
    await session.flush()


# --- stages: move, won, lost, reopen ---------------------------------------------------------


async def enter_stage(
    session: AsyncSession,
    principal: Principal | None,
    deal: Deal,
    stage: Stage,
    *,
    reason: str = "move",
    status: DealStatus | None = None,
    lost_reason: str | None = None,
    lost_note: str | None = None,
) -> None:
    """Put the deal in `stage` (and status), writing stage and field history and `deal.stage_changed`."""
    now = utcnow()
    before = _tracked_values(deal)
    from_stage_id = deal.stage_id
    deal.stage_id = stage.id
    deal.stage_entered_at = now
    if not deal.probability_overridden or stage.kind != StageKind.open:
        deal.probability = stage.probability
        if stage.kind != StageKind.open:
            deal.probability_overridden = False
    if status is not None:
        deal.status = status
        if status == DealStatus.open:
            deal.closed_at = None
            deal.lost_reason = None
            deal.lost_note = None
        else:
            deal.closed_at = now
        if status == DealStatus.lost:
            deal.lost_reason, deal.lost_note = lost_reason, lost_note
    _touch(deal, now)
    session.add(
        DealStageHistory(
            deal_id=deal.id,
            pipeline_id=deal.pipeline_id,
            from_stage_id=from_stage_id,
            to_stage_id=stage.id,
            at=now,
            by_user_id=principal.user_id if principal else None,
        )
    )
    diff = _track(session, principal, deal, before, now)
    audit.record(
        session,
        actor=principal,
        entity="deal",
        entity_id=deal.id,
        action=reason,
        changes={"stage_id": [str(from_stage_id), str(stage.id)], **diff},
        org_id=deal.org_id,
    )
    await outbox.emit(
        session,
        "deal.stage_changed",
        _payload(deal, principal, from_stage_id=from_stage_id, to_stage_id=stage.id, reason=reason),
    )
    if status == DealStatus.won:
        await outbox.emit(session, "deal.won", _payload(deal, principal))
    elif status == DealStatus.lost:
        await outbox.emit(session, "deal.lost", _payload(deal, principal, lost_reason=lost_reason))
    await session.flush()


def _missing_exit_fields(deal: Deal, stages: list[Stage], current: Stage, target: Stage) -> list[FieldError]:
    """Fields required to leave the current stage and every open stage skipped on the way forward."""
    missing: dict[str, FieldError] = {}
    for stage in stages:
        if stage.kind != StageKind.open or not (current.position <= stage.position < target.position):
            continue
        for name in stage.required_fields:
            if getattr(deal, name) is None and name not in missing:
                label = stage.name_en or stage.name
                missing[name] = FieldError(
                    field=name, code="required_to_leave_stage", message=f"required to leave stage {label!r}"
                )
    return list(missing.values())


async def _load_stage_context(session: AsyncSession, deal: Deal) -> tuple[list[Stage], Stage]:
    stages = await pipelines_service.live_stages(session, deal.pipeline_id)
    current = await get_or_404(session, Stage, deal.stage_id, what="stage")
    return stages, current


def _require_open(deal: Deal) -> None:
    if deal.status != DealStatus.open:
        raise InvalidTransition(f"The deal is {deal.status}; reopen it first.")


async def _lost_reasons(session: AsyncSession, org_id: uuid.UUID) -> list[str]:
    org = await session.get(Organisation, org_id)
    return org.typed_settings().lost_reasons if org else []


async def move_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    stage_id: uuid.UUID,
    *,
    lost_reason: str | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Move an open deal to a stage of its pipeline; forward moves need the exit fields (422 names them).

    Moving backwards is allowed and recorded like any move. Moving to the won or lost stage is
    winning or losing the deal (losing needs `lost_reason`). Moving to the stage it is in changes nothing.
    """
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    _require_open(deal)
    stages, current = await _load_stage_context(session, deal)
    target = next((s for s in stages if s.id == stage_id), None)
    if target is None:
        raise _invalid("stage_id", "not_in_pipeline", "not a stage of the deal's pipeline")
    if target.id == current.id:
        return deal
    if target.kind == StageKind.lost:
        return await _lose(session, principal, deal, target, lost_reason, None)
    missing = (
        _missing_exit_fields(deal, stages, current, target) if target.position > current.position else []
    )
    if missing:
        names = ", ".join(e.field for e in missing)
        raise ValidationFailed(f"Fill {names} before the deal leaves this stage.", errors=missing)
    status = DealStatus.won if target.kind == StageKind.won else None
    await enter_stage(session, principal, deal, target, reason="won" if status else "move", status=status)
    return deal


async def win_deal(
    session: AsyncSession,
    principal: Principal | None,
    deal_id: uuid.UUID,
    *,
    expected_version: int | None = None,
    enforce_exit_fields: bool = True,
) -> Deal:
    """Mark a deal won: it moves to its pipeline's won stage (exit fields of the stages left are needed)."""
    deal = (
        await get_deal(session, principal, deal_id, lock=True)
        if principal
        else await get_or_404(session, Deal, deal_id, what="deal")
    )
    check_version(deal, expected_version)
    _require_open(deal)
    stages, current = await _load_stage_context(session, deal)
    won = next(s for s in stages if s.kind == StageKind.won)
    if enforce_exit_fields:
        missing = _missing_exit_fields(deal, stages, current, won)
        if missing:
            names = ", ".join(e.field for e in missing)
            raise ValidationFailed(f"Fill {names} before the deal is won.", errors=missing)
    await enter_stage(session, principal, deal, won, reason="won", status=DealStatus.won)
    return deal


async def _lose(
    session: AsyncSession,
    principal: Principal,
    deal: Deal,
    lost_stage: Stage,
    reason: str | None,
    note: str | None,
) -> Deal:
    reasons = await _lost_reasons(session, deal.org_id)
    if not reason:
        raise _invalid("lost_reason", "required", "a lost deal needs a reason")
    if reason not in reasons:
        raise _invalid("reason", "unknown_reason", f"one of: {', '.join(reasons)}")
    await enter_stage(
        session,
        principal,
        deal,
        lost_stage,
        reason="lost",
        status=DealStatus.lost,
        lost_reason=reason,
        lost_note=note,
    )
    return deal


async def lose_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    *,
    reason: str,
    note: str | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Mark a deal lost with a reason from the organisation's list (`lost_reasons` setting)."""
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    _require_open(deal)
    stages, _ = await _load_stage_context(session, deal)
    lost_stage = next(s for s in stages if s.kind == StageKind.lost)
    return await _lose(session, principal, deal, lost_stage, reason, note)


async def reopen_deal(
    session: AsyncSession,
    principal: Principal,
    deal_id: uuid.UUID,
    *,
    stage_id: uuid.UUID | None = None,
    expected_version: int | None = None,
) -> Deal:
    """Reopen a won or lost deal into an open stage (default: the last open stage it was in)."""
    deal = await get_deal(session, principal, deal_id, lock=True)
    check_version(deal, expected_version)
    if deal.status == DealStatus.open:
        raise InvalidTransition("The deal is already open.")
    stages, _ = await _load_stage_context(session, deal)
    open_stages = {s.id: s for s in stages if s.kind == StageKind.open}
    if stage_id is not None:
        if stage_id not in open_stages:
            raise _invalid("stage_id", "not_an_open_stage", "an open stage of the deal's pipeline")
        target = open_stages[stage_id]
    else:
        rows = (
            await session.execute(
                select(col(DealStageHistory.to_stage_id))
                .where(col(DealStageHistory.deal_id) == deal.id)
                .order_by(col(DealStageHistory.at).desc(), col(DealStageHistory.id).desc())
            )
        ).scalars()
        last_open = next((open_stages[s] for s in rows if s in open_stages), None)
        target = last_open or next(iter(open_stages.values()))
    await enter_stage(session, principal, deal, target, reason="reopen", status=DealStatus.open)
    return deal


# --- lists, board, history --------------------------------------------------------------------


def filtered_deals(
    principal: Principal,
    *,
    pipeline_id: uuid.UUID | None = None,
    stage_id: uuid.UUID | None = None,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    status: DealStatus | None = None,
    account_id: uuid.UUID | None = None,
    currency: str | None = None,
    amount_min: Decimal | None = None,
    amount_max: Decimal | None = None,
    expected_close_from: date | None = None,
    expected_close_to: date | None = None,
    rotting: bool | None = None,
) -> Select[Any]:
    """Deals the caller may see, filtered (expected close range is inclusive)."""
    stmt = select(Deal).where(visibility_clause(principal))
    if pipeline_id is not None:
        stmt = stmt.where(col(Deal.pipeline_id) == pipeline_id)
    if stage_id is not None:
        stmt = stmt.where(col(Deal.stage_id) == stage_id)
    if owner_id is not None:
        stmt = stmt.where(col(Deal.owner_id) == owner_id)
    if team_id is not None:
        stmt = stmt.where(col(Deal.owner_id).in_(select(col(User.id)).where(col(User.team_id) == team_id)))
    if status is not None:
        stmt = stmt.where(col(Deal.status) == status)
    if account_id is not None:
        stmt = stmt.where(col(Deal.account_id) == account_id)
    if currency is not None:
        stmt = stmt.where(col(Deal.currency) == currency)
    if amount_min is not None:
        stmt = stmt.where(col(Deal.amount) >= amount_min)
    if amount_max is not None:
        stmt = stmt.where(col(Deal.amount) <= amount_max)
    if expected_close_from is not None:
        stmt = stmt.where(col(Deal.expected_close_date) >= expected_close_from)
    if expected_close_to is not None:
        stmt = stmt.where(col(Deal.expected_close_date) <= expected_close_to)
    if rotting is not None:
        # Rotting: an open deal without activity for longer than its stage's rotting threshold.
        stale = select(col(Stage.id)).where(
            col(Stage.id) == col(Deal.stage_id),
            col(Stage.rotting_days).is_not(None),
            col(Deal.last_activity_at) < func.now() - func.make_interval(0, 0, 0, col(Stage.rotting_days)),
        )
        condition = (col(Deal.status) == DealStatus.open) & stale.exists()
        stmt = stmt.where(condition if rotting else ~condition)
    return stmt


SORTABLE = {
    "created_at": Deal.created_at,
    "updated_at": Deal.updated_at,
    "amount": Deal.amount,
    "expected_close_date": Deal.expected_close_date,
    "stage_entered_at": Deal.stage_entered_at,
    "name": Deal.name,
}


async def list_deals(
    session: AsyncSession, stmt: Select[Any], page: PageParams
) -> tuple[list[Deal], str | None]:
    """One page of a filtered deal query."""
    return await paginate(session, stmt, page, id_column=Deal.id, sortable=SORTABLE)


async def totals_by_currency(session: AsyncSession, stmt: Select[Any]) -> list[CurrencyTotal]:
    """Count, amount and weighted amount (Σ amount × probability) per currency, never across currencies."""
    sub = stmt.subquery()
    rows = await session.execute(
        select(
            sub.c.currency,
            func.count(),
            func.coalesce(func.sum(sub.c.amount), 0),
            func.coalesce(func.sum(sub.c.amount * sub.c.probability / 100), 0),
        )
        .group_by(sub.c.currency)
        .order_by(sub.c.currency)
    )
    return [
        CurrencyTotal(
            currency=currency,
            count=count,
            amount=round_money(Decimal(amount), currency),
            weighted_amount=round_money(Decimal(weighted), currency),
        )
        for currency, count, amount, weighted in rows.all()
    ]


async def board(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID, page: PageParams
) -> list[tuple[Stage, int, list[CurrencyTotal], list[Deal], str | None]]:
    """Per live stage: count, totals per currency and the first page of the deals the caller may see."""
    pipeline, stages = await pipelines_service.get_pipeline(session, pipeline_id)
    columns = []
    for stage in stages:
        stmt = filtered_deals(principal, pipeline_id=pipeline.id, stage_id=stage.id)
        totals = await totals_by_currency(session, stmt)
        rows, next_cursor = await list_deals(session, stmt, page)
        columns.append((stage, sum(t.count for t in totals), totals, rows, next_cursor))
    return columns


async def history(session: AsyncSession, principal: Principal, deal_id: uuid.UUID) -> list[DealHistoryEntry]:
    """Stage changes and tracked field changes of a deal, in time order."""
    deal = await get_deal(session, principal, deal_id)
    stage_rows = (
        await session.execute(select(DealStageHistory).where(col(DealStageHistory.deal_id) == deal.id))
    ).scalars()
    field_rows = (
        await session.execute(select(DealFieldHistory).where(col(DealFieldHistory.deal_id) == deal.id))
    ).scalars()
    entries = [
        DealHistoryEntry(
            kind=HistoryKind.stage,
            at=r.at,
            by_user_id=r.by_user_id,
            from_stage_id=r.from_stage_id,
            to_stage_id=r.to_stage_id,
        )
        for r in stage_rows
    ] + [
        DealHistoryEntry(
            kind=HistoryKind.field,
            at=r.at,
            by_user_id=r.by_user_id,
            field=r.field,
            old_value=r.old_value,
            new_value=r.new_value,
        )
        for r in field_rows
    ]
    # Rows of one change share its timestamp: the stage row first, then fields in a fixed order.
    order = {name: i for i, name in enumerate(TRACKED_FIELDS)}
    entries.sort(key=lambda e: (e.at, e.kind != HistoryKind.stage, order.get(e.field or "", -1)))
    return entries
