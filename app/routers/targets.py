"""Sales targets (销售目标) per user, team or organisation and month, quarter or year."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import BusinessDate
from app.models.metrics import SalesTargetCreate, SalesTargetRead, SalesTargetUpdate
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import targets as service

router = APIRouter(prefix="/v1/targets", tags=["targets"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("targets:read"))]
Writer = Annotated[Principal, Depends(require("targets:write"))]


@router.get("", response_model=Page[SalesTargetRead], status_code=200, summary="List targets")
async def list_targets(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    user_id: uuid.UUID | None = None,
    team_id: uuid.UUID | None = None,
    period_from: BusinessDate | None = None,
    period_to: BusinessDate | None = None,
) -> Page[SalesTargetRead]:
    """Every member reads targets; filter by user, team, and periods lying within [period_from, period_to)."""
    rows, next_cursor = await service.list_targets(
        session, page, user_id=user_id, team_id=team_id, period_from=period_from, period_to=period_to
    )
    return Page(data=[SalesTargetRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=SalesTargetRead,
    status_code=status.HTTP_201_CREATED,
    summary="Set a target",
    responses=problem_responses(409),
)
async def create_target(
    body: SalesTargetCreate, principal: Writer, session: SessionDep, response: Response
) -> SalesTargetRead:
    """Admins (any scope) and managers (their team and its members); one per scope and period (409)."""
    target = await service.create_target(session, principal, body)
    set_etag(response, target)
    return SalesTargetRead.model_validate(target)


@router.get(
    "/{target_id}",
    response_model=SalesTargetRead,
    status_code=200,
    summary="Get a target",
    responses=problem_responses(404),
)
async def get_target(
    target_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> SalesTargetRead:
    """One target."""
    target = await service.get_target(session, target_id)
    set_etag(response, target)
    return SalesTargetRead.model_validate(target)


@router.patch(
    "/{target_id}",
    response_model=SalesTargetRead,
    status_code=200,
    summary="Change a target",
    responses=problem_responses(404, 412),
)
async def update_target(
    target_id: uuid.UUID,
    body: SalesTargetUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> SalesTargetRead:
    """Amount, currency or count."""
    target = await service.update_target(session, principal, target_id, body, expected_version=version)
    set_etag(response, target)
    return SalesTargetRead.model_validate(target)


@router.delete(
    "/{target_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove a target",
    responses=problem_responses(404),
)
async def delete_target(target_id: uuid.UUID, principal: Writer, session: SessionDep) -> Response:
    """Admins and the team's manager."""
    await service.delete_target(session, principal, target_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
