"""Reading deals: filtered lists, totals per currency, the pipeline board, and a deal's history.

Every query here goes through `deals.visibility_clause`, so a caller sees exactly the deals the
roles allow (see app.services.deals.service).
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.deal import (
    TRACKED_FIELDS,
    CurrencyTotal,
    Deal,
    DealFieldHistory,
    DealHistoryEntry,
    DealStageHistory,
    DealStatus,
    HistoryKind,
)
from app.models.pipeline import Stage
from app.models.user import User
from app.money import round_money
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services.deals import pipelines as pipelines_service
from app.services.deals.service import get_deal, visibility_clause


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
            col(Stage.org_id) == col(Deal.org_id),
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
