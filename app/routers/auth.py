"""Password login and the caller's own identity."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import PrincipalDep, SessionDep, StateDep
from app.errors import problem_responses
from app.models import examples as ex
from app.models.common import Input, Role
from app.models.organisation import OrganisationRead
from app.models.user import UserRead
from app.routers import COMMON_ERRORS
from app.services import auth as auth_service
from app.services import organisation as org_service
from app.services import users as user_service
from app.services.login_guard import LoginGuard

router = APIRouter(prefix="/v1", tags=["auth"], responses=COMMON_ERRORS)


class TokenRequest(Input):
    """Email and password; organisation_id only when the email exists in several organisations."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TOKEN_REQUEST))

    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=200)
    organisation_id: uuid.UUID | None = None


class TokenResponse(BaseModel):
    """A bearer token for the API."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int


class Me(BaseModel):
    """Who the credential belongs to, in which organisation, with which role and scopes."""

    user: UserRead
    organisation: OrganisationRead
    role: Role
    api_key_id: uuid.UUID | None
    scopes: list[str]


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    summary="Log in with a password",
    responses=problem_responses(429),
)
async def issue_token(
    body: TokenRequest, request: Request, response: Response, session: SessionDep, state: StateDep
) -> TokenResponse:
    """Exchange email and password for a JWT access token; repeated failures for an email or from
    an address are refused for a growing time (429 with Retry-After)."""
    settings = state.settings
    guard = LoginGuard(state.redis, email=body.email, address=request.client.host if request.client else None)
    token, ttl = await auth_service.login(
        session,
        email=body.email,
        password=body.password,
        org_id=body.organisation_id,
        secret=settings.resolved_secret_key(),
        ttl_seconds=settings.jwt_ttl_seconds,
        guard=guard,
    )
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1
    return TokenResponse(access_token=token, expires_in=ttl)


@router.get("/me", response_model=Me, summary="Who am I", responses=problem_responses(404))
async def me(principal: PrincipalDep, session: SessionDep) -> Me:
    """The caller's user, organisation, role and scopes."""
    user = await user_service.get_user(session, principal.user_id)
    org = await org_service.get_organisation(session, principal.org_id)
    return Me(
        user=UserRead.model_validate(user),
        organisation=OrganisationRead.model_validate({**org.model_dump(), "settings": org.typed_settings()}),
        role=principal.role,
        api_key_id=principal.api_key_id,
        scopes=sorted(principal.scopes),
    )
