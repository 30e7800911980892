"""API keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.deps import PageDep, SessionDep, require
from app.errors import problem_responses
from app.models.api_key import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.pagination import Page
from app.routers import COMMON_ERRORS
from app.security import Principal
from app.services import api_keys as service

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"], responses=COMMON_ERRORS)

Reader = Annotated[Principal, Depends(require("api_keys:read"))]
Writer = Annotated[Principal, Depends(require("api_keys:write"))]


@router.get("", response_model=Page[ApiKeyRead], summary="List API keys")
async def list_api_keys(
    principal: Reader,
    session: SessionDep,
    page: PageDep,
    user_id: uuid.UUID | None = None,
    include_revoked: bool = False,
) -> Page[ApiKeyRead]:
    """Your keys; an admin sees every key of the organisation. Secrets are never shown again."""
    rows, next_cursor = await service.list_keys(
        session, principal, page, user_id=user_id, include_revoked=include_revoked
    )
    return Page(data=[ApiKeyRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key",
    responses=problem_responses(404),
)
async def create_api_key(
    body: ApiKeyCreate, principal: Writer, session: SessionDep, response: Response
) -> ApiKeyCreated:
    """The token is in this response only (never stored for an Idempotency-Key replay). Omitted
    scopes mean all the user's role allows."""
    key, token = await service.create_key(session, principal, body)
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated.model_validate({**key.model_dump(), "key": token})


@router.get(
    "/{key_id}",
    response_model=ApiKeyRead,
    summary="Get an API key",
    responses=problem_responses(404),
)
async def get_api_key(key_id: uuid.UUID, principal: Reader, session: SessionDep) -> ApiKeyRead:
    """One key, without its secret."""
    return ApiKeyRead.model_validate(await service.get_key(session, principal, key_id))


@router.delete(
    "/{key_id}",
    response_model=ApiKeyRead,
    summary="Revoke an API key",
    responses=problem_responses(404),
)
async def revoke_api_key(key_id: uuid.UUID, principal: Writer, session: SessionDep) -> ApiKeyRead:
    """The key stops working at once."""
    return ApiKeyRead.model_validate(await service.revoke_key(session, principal, key_id))
