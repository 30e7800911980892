"""Deals: CRUD, stage moves, won / lost / reopen, history, filtered lists with per-currency totals."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import BusinessDate, CurrencyCode
from app.models.deal import (
    DealCreate,
    DealHistoryEntry,
    DealLost,
    DealMove,
    DealPage,
    DealRead,
    DealReopen,
    DealStatus,
    DealUpdate,
)
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services.deals import queries as deal_queries
from app.services.deals import service
from app.services.deals import stages as deal_stages

router = APIRouter(prefix="/v1/deals", tags=["deals"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("deals:read"))]
Writer = Annotated[Principal, Depends(require("deals:write"))]


def _read(response: Response, deal: object) -> DealRead:
    set_etag(response, deal)
    return DealRead.model_validate(deal)


@router.get("", response_model=DealPage, summary="List deals")
async def list_deals(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    pipeline_id: uuid.UUID | None = None,
    stage_id: uuid.UUID | None = None,
    owner_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    status: DealStatus | None = None,
    account_id: uuid.UUID | None = None,
    currency: CurrencyCode | None = None,
    amount_min: Annotated[Decimal | None, Query(ge=0)] = None,
    amount_max: Annotated[Decimal | None, Query(ge=0)] = None,
    expected_close_from: BusinessDate | None = None,
    expected_close_to: BusinessDate | None = None,
    rotting: Annotated[bool | None, Query(description="Open deals idle past their stage's threshold")] = None,
) -> DealPage:
    """Deals you may see, filtered; `totals` are per currency over every matching deal."""
    stmt = deal_queries.filtered_deals(
        principal,
        pipeline_id=pipeline_id,
        stage_id=stage_id,
        owner_id=owner_id,
        team_id=team_id,
        status=status,
        account_id=account_id,
        currency=currency,
        amount_min=amount_min,
        amount_max=amount_max,
        expected_close_from=expected_close_from,
        expected_close_to=expected_close_to,
        rotting=rotting,
    )
    rows, next_cursor = await deal_queries.list_deals(session, stmt, page)
    totals = await deal_queries.totals_by_currency(session, stmt)
    return DealPage(data=[DealRead.model_validate(r) for r in rows], next_cursor=next_cursor, totals=totals)


@router.post(
    "",
    response_model=DealRead,
    status_code=status.HTTP_201_CREATED,
    summary="Create a deal",
    responses=problem_responses(404),
)
async def create_deal(
    body: DealCreate, principal: Writer, session: SessionDep, response: Response
) -> DealRead:
    """A deal in the default (or given) pipeline, entering its first (or given) open stage."""
    return _read(response, await service.create_deal(session, principal, body))


@router.get("/{deal_id}", response_model=DealRead, summary="Get a deal", responses=problem_responses(404))
async def get_deal(
    deal_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> DealRead:
    """One deal you may see."""
    return _read(response, await service.get_deal(session, principal, deal_id))


@router.patch(
    "/{deal_id}", response_model=DealRead, summary="Change a deal", responses=problem_responses(404, 412)
)
async def update_deal(
    deal_id: uuid.UUID,
    body: DealUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> DealRead:
    """Fields other than the stage; `probability: null` returns to the stage default."""
    deal = await service.update_deal(session, principal, deal_id, body, expected_version=version)
    return _read(response, deal)


@router.delete(
    "/{deal_id}", response_model=DealRead, summary="Delete a deal", responses=problem_responses(404, 409, 412)
)
async def delete_deal(
    deal_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep
) -> DealRead:
    """Erase a deal, its quotes and history (not when it has an order); losing it keeps the metrics whole."""
    return DealRead.model_validate(
        await service.delete_deal(session, principal, deal_id, expected_version=version)
    )


@router.post(
    "/{deal_id}/move",
    response_model=DealRead,
    summary="Move a deal to a stage",
    responses=problem_responses(404, 409, 412),
)
async def move_deal(
    deal_id: uuid.UUID,
    body: DealMove,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> DealRead:
    """Forward moves need the fields the stages left require (422 names them); backward moves are allowed."""
    deal = await deal_stages.move_deal(
        session, principal, deal_id, body.stage_id, lost_reason=body.lost_reason, expected_version=version
    )
    return _read(response, deal)


@router.post(
    "/{deal_id}/won",
    response_model=DealRead,
    summary="Win a deal",
    responses=problem_responses(404, 409, 412),
)
async def win_deal(
    deal_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep, response: Response
) -> DealRead:
    """Move the deal to its pipeline's won stage."""
    return _read(response, await deal_stages.win_deal(session, principal, deal_id, expected_version=version))


@router.post(
    "/{deal_id}/lost",
    response_model=DealRead,
    summary="Lose a deal",
    responses=problem_responses(404, 409, 412),
)
async def lose_deal(
    deal_id: uuid.UUID,
    body: DealLost,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> DealRead:
    """Move the deal to the lost stage; the reason comes from the organisation's `lost_reasons`."""
    deal = await deal_stages.lose_deal(
        session, principal, deal_id, reason=body.reason, note=body.note, expected_version=version
    )
    return _read(response, deal)


@router.post(
    "/{deal_id}/reopen",
    response_model=DealRead,
    summary="Reopen a deal",
    responses=problem_responses(404, 409, 412),
)
async def reopen_deal(
    deal_id: uuid.UUID,
    body: DealReopen,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> DealRead:
    """Back to an open stage (by default the last open stage it was in)."""
    deal = await deal_stages.reopen_deal(
        session, principal, deal_id, stage_id=body.stage_id, expected_version=version
    )
    return _read(response, deal)


@router.get(
    "/{deal_id}/history",
    response_model=list[DealHistoryEntry],
    summary="Deal history",
    responses=problem_responses(404),
)
async def deal_history(deal_id: uuid.UUID, principal: Reader, session: SessionDep) -> list[DealHistoryEntry]:
    """Stage changes and tracked field changes (previous and new values, who, when), in time order."""
    return await deal_queries.history(session, principal, deal_id)
