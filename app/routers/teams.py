"""Teams."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import Role
from app.models.user import TeamCreate, TeamRead, TeamUpdate
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import teams as service

router = APIRouter(prefix="/v1/teams", tags=["teams"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("teams:read"))]
Writer = Annotated[Principal, Depends(require("teams:write", Role.admin))]


@router.get("", response_model=Page[TeamRead], summary="List teams")
async def list_teams(principal: Reader, session: SessionDep, page: PageDep) -> Page[TeamRead]:
    """All teams with their member ids."""
    rows, next_cursor = await service.list_teams(session, page)
    return Page(data=await service.to_read(session, rows), next_cursor=next_cursor)


@router.post(
    "",
    response_model=TeamRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add a team",
    responses=problem_responses(409),
)
async def create_team(
    body: TeamCreate, principal: Writer, session: SessionDep, response: Response
) -> TeamRead:
    """Admins add teams."""
    team = await service.create_team(session, principal, body)
    set_etag(response, team)
    return (await service.to_read(session, [team]))[0]


@router.get("/{team_id}", response_model=TeamRead, summary="Get a team", responses=problem_responses(404))
async def get_team(
    team_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> TeamRead:
    """One team with its member ids."""
    team = await service.get_team(session, team_id)
    set_etag(response, team)
    return (await service.to_read(session, [team]))[0]


@router.patch(
    "/{team_id}",
    response_model=TeamRead,
    summary="Change a team",
    responses=problem_responses(404, 409, 412),
)
async def update_team(
    team_id: uuid.UUID,
    body: TeamUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> TeamRead:
    """Rename, change the manager, or replace the members."""
    team = await service.update_team(session, principal, team_id, body, expected_version=version)
    set_etag(response, team)
    return (await service.to_read(session, [team]))[0]


@router.delete(
    "/{team_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a team",
    responses=problem_responses(404, 412),
)
async def delete_team(
    team_id: uuid.UUID, principal: Writer, session: SessionDep, version: IfMatchDep
) -> Response:
    """Members stay, without a team."""
    await service.delete_team(session, principal, team_id, expected_version=version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
