"""Deals: visibility, create / update / delete, and the field history (stage changes are in
app.services.deals.stages, lists and the board in app.services.deals.queries).

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
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.models.account import Account, Contact
from app.models.base import utcnow
from app.models.common import Role
from app.models.deal import (
    TRACKED_FIELDS,
    Deal,
    DealCreate,
    DealFieldHistory,
    DealStageHistory,
    DealUpdate,
)
from app.models.events import DealCreated, DealDeleted, DealEvent
from app.models.lead import Lead
from app.models.organisation import Organisation
from app.models.pipeline import Pipeline, Stage, StageKind
from app.models.receivable import Order
from app.models.user import User
from app.money import fits_currency, plain_percent, round_money
from app.security import Principal
from app.services import audit, outbox
from app.services.common import check_version, get_or_404, snapshot
from app.services.deals import pipelines as pipelines_service

AUDITED = ["name", "pipeline_id", "stage_id", "owner_id", "amount", "currency", "status"]


E = TypeVar("E", bound=DealEvent)


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
        raise ValidationFailed.on("owner_id", "not_found", "no such active user")
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


def track_changes(
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


def tracked_values(deal: Deal) -> dict[str, Any]:
    """The tracked fields' current values, to diff against after a change."""
    return {name: _field_value(deal, name) for name in TRACKED_FIELDS}


def touch(deal: Deal, at: datetime) -> None:
    """A change: bump the version (the ETag), updated_at and last activity (rotting)."""
    deal.version += 1
    deal.updated_at = at
    deal.last_activity_at = at


# --- create, read, update ---------------------------------------------------------------------


async def _check_links(
    session: AsyncSession, account_id: uuid.UUID | None, contact_id: uuid.UUID | None
) -> None:
    if account_id is not None and await session.get(Account, account_id) is None:
        raise ValidationFailed.on("account_id", "not_found", "no such account")
    if contact_id is not None and await session.get(Contact, contact_id) is None:
        raise ValidationFailed.on("contact_id", "not_found", "no such contact")


def _check_amount(amount: Decimal | None, currency: str) -> None:
    if amount is not None and not fits_currency(amount, currency):
        raise ValidationFailed.on(
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
            raise ValidationFailed.on("stage_id", "not_found", "no such stage")
        pipeline = await get_or_404(session, Pipeline, stage_row.pipeline_id, what="pipeline")
    else:
        pipeline = await pipelines_service.default_pipeline(session)
    stages = await pipelines_service.live_stages(session, pipeline.id)
    if data.stage_id is not None:
        stage = next((s for s in stages if s.id == data.stage_id), None)
        if stage is None or stage.kind != StageKind.open:
            raise ValidationFailed.on("stage_id", "not_an_open_stage", "an open stage of the deal's pipeline")
    else:
        stage = next(s for s in stages if s.kind == StageKind.open)
    owner_id = data.owner_id or principal.user_id
    await _check_owner(session, principal, owner_id)
    await _check_links(session, data.account_id, data.contact_id)
    if data.lead_id is not None and await session.get(Lead, data.lead_id) is None:
        # No foreign key holds this column: another organisation's or an unknown lead is refused here.
        raise ValidationFailed.on("lead_id", "not_found", "no such lead")
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
    track_changes(session, principal, deal, {}, now)
    audit.record(
        session,
        actor=principal,
        entity="deal",
        entity_id=deal.id,
        action="create",
        changes=snapshot(deal, AUDITED),
    )
    await outbox.emit(session, deal_event(DealCreated, deal, principal))
    await session.flush()
    return deal


def deal_event(kind: type[E], deal: Deal, principal: Principal | None, **extra: Any) -> E:
    """A deal event of type `kind`: the deal as it is now, who changed it, and `extra` fields."""
    return kind(
        deal_id=deal.id,
        pipeline_id=deal.pipeline_id,
        stage_id=deal.stage_id,
        status=deal.status,
        owner_id=deal.owner_id,
        amount=None if deal.amount is None else str(round_money(Decimal(deal.amount), deal.currency)),
        currency=deal.currency,
        by_user_id=principal.user_id if principal else None,
        **extra,
    )


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
    changes = data.changes()
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
    before = tracked_values(deal)
    audit_diff: dict[str, Any] = {}
    for name, value in changes.items():
        old = getattr(deal, name)
        if old != value:
            audit_diff[name] = [_history_value(old), _history_value(value)]
            setattr(deal, name, value)
    if audit_diff:
        now = utcnow()
        touch(deal, now)
        track_changes(session, principal, deal, before, now)
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
    await outbox.emit(session, deal_event(DealDeleted, deal, principal))
    await session.delete(deal)
    await session.flush()
    return deal


async def set_amount(
    session: AsyncSession, principal: Principal | None, deal: Deal, amount: Decimal, currency: str
) -> None:
    """Set amount and currency from elsewhere (a primary quote), with field history."""
    before = tracked_values(deal)
    if deal.amount == amount and deal.currency == currency:
        return
    deal.amount, deal.currency = amount, currency
    now = utcnow()
    touch(deal, now)
    track_changes(session, principal, deal, before, now)
    await session.flush()
