"""Users: the organisation's directory."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.deps import IfMatchDep, PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.common import Role
from app.models.user import PasswordChange, UserCreate, UserRead, UserUpdate
from app.pagination import Page
from app.routers import COMMON_ERRORS, set_etag
from app.security import Principal
from app.services import users as service

router = APIRouter(prefix="/v1/users", tags=["users"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("users:read"))]
Writer = Annotated[Principal, Depends(require("users:write"))]


@router.get("", response_model=Page[UserRead], summary="List users")
async def list_users(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    role: Role | None = None,
    team_id: uuid.UUID | None = None,
    active: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Search email and name")] = None,
) -> Page[UserRead]:
    """Every member of the organisation may read the directory (to assign and mention)."""
    rows, next_cursor = await service.list_users(
        session, page, role=role, team_id=team_id, active=active, q=q
    )
    return Page(data=[UserRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add a user",
    responses=problem_responses(409),
)
async def create_user(
    body: UserCreate, principal: Writer, session: SessionDep, response: Response
) -> UserRead:
    """Admins add users; `password` is optional."""
    user = await service.create_user(session, principal, body)
    set_etag(response, user)
    return UserRead.model_validate(user)


@router.get("/{user_id}", response_model=UserRead, summary="Get a user", responses=problem_responses(404))
async def get_user(
    user_id: uuid.UUID, principal: Reader, session: SessionDep, response: Response
) -> UserRead:
    """One user."""
    user = await service.get_user(session, user_id)
    set_etag(response, user)
    return UserRead.model_validate(user)


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    summary="Change a user",
    responses=problem_responses(404, 409, 412),
)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> UserRead:
    """Admins change anything; users their own name, timezone and working hours."""
    user = await service.update_user(session, principal, user_id, body, expected_version=version)
    set_etag(response, user)
    return UserRead.model_validate(user)


@router.delete(
    "/{user_id}",
    response_model=UserRead,
    summary="Deactivate a user",
    responses=problem_responses(404, 409, 412),
)
async def deactivate_user(
    user_id: uuid.UUID,
    principal: Writer,
    session: SessionDep,
    version: IfMatchDep,
    response: Response,
) -> UserRead:
    """Users are never erased (their records keep an owner): they are deactivated, keys revoked."""
    user = await service.deactivate_user(session, principal, user_id, expected_version=version)
    set_etag(response, user)
    return UserRead.model_validate(user)


@router.post(
    "/{user_id}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change or reset a password",
    responses=problem_responses(404),
)
async def change_password(
    user_id: uuid.UUID, body: PasswordChange, principal: Writer, session: SessionDep
) -> Response:
    """Your own needs `current_password` (if one is set); admins reset anyone's."""
    await service.change_password(
        session,
        principal,
        user_id,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
