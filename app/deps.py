"""FastAPI dependencies as Annotated aliases: SessionDep, PrincipalDep, PageDep, IfMatchDep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app import ratelimit
from app.config import Settings
from app.db import scope_session
from app.errors import Forbidden, PreconditionFailed, Unauthorized
from app.pagination import PageParams
from app.security import Principal, hash_token
from app.services import auth as auth_service
from app.state import AppState


async def get_state(request: Request) -> AppState:
    """The process-wide resources opened by the lifespan (async: a sync dependency would cost a
    threadpool hop on every request)."""
    state: AppState = request.app.state.loudou
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    """The settings this app was built with."""
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request, committed before the response is sent."""
    async with state.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            if session.in_transaction() or session.new or session.dirty or session.deleted:
                await session.commit()  # else there is nothing to commit (a public intake post)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("Send `Authorization: Bearer <api key or token>`.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be `Bearer <api key or token>`.")
    return token.strip()


async def get_principal(
    request: Request,
    state: StateDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """Authenticate the caller and scope the request's session to their organisation."""
    token = _bearer(authorization)
    limit = state.settings.rate_limit_per_minute
    request.state.ratelimit = await ratelimit.check(
        state.redis,
        [
            ratelimit.Limit(
                f"loudou:rl:{hash_token(token)[:24]}",
                limit,
                "credential",
                f"More than {limit} requests a minute with this credential.",
            ),
            ratelimit.address_limit(state.settings, request.client.host if request.client else None),
        ],
    )
    principal = await auth_service.authenticate(session, token, secret=state.settings.resolved_secret_key())
    if principal is None:
        raise Unauthorized("The API key or token is not valid.")
    scope_session(session, principal.org_id)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def _read_only(session: AsyncSession, timeout_ms: int) -> None:
    await session.execute(
        text(
            "SELECT set_config('transaction_read_only', 'on', true), "
            "set_config('statement_timeout', :timeout, true)"
        ),
        {"timeout": f"{timeout_ms}ms"},
    )


async def get_read_session(
    state: StateDep, principal: PrincipalDep, session: SessionDep
) -> AsyncIterator[AsyncSession]:
    """A read-only session for metrics and exports, scoped to the caller's organisation, every statement
    under LOUDOU_METRICS_STATEMENT_TIMEOUT_MS: the replica's when DATABASE_READ_URL is set, else the
    request's own (its transaction made read-only: one connection per request, not two)."""
    timeout_ms = state.settings.metrics_statement_timeout_ms
    if state.read_sessions is None:
        await _read_only(session, timeout_ms)
        yield session
        return
    async with state.read_sessions() as replica:
        scope_session(replica, principal.org_id)
        await _read_only(replica, timeout_ms)
        try:
            yield replica
        finally:
            await replica.rollback()


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


def require(scope: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets the request through only if role and key scopes allow `scope`."""

    async def _check(principal: PrincipalDep) -> Principal:
        if not principal.allows(scope):
            raise Forbidden(f"This credential may not do `{scope}`.")
        return principal

    return _check


async def page_params(
    state: StateDep,
    limit: Annotated[int | None, Query(ge=1, description="Page size (capped at the maximum).")] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    sort: Annotated[str | None, Query(description="Field to order by; prefix `-` for descending.")] = None,
) -> PageParams:
    """Paging parameters with the limit capped, never rejected for being large."""
    size = min(limit or state.settings.page_size_default, state.settings.page_size_max)
    return PageParams(limit=size, cursor=cursor, sort=sort)


PageDep = Annotated[PageParams, Depends(page_params)]


async def if_match(
    if_match: Annotated[str | None, Header(description="ETag from a GET; 412 if stale.")] = None,
) -> int | None:
    """The version the client last saw, from `If-Match: "<version>"` (None when not sent or `*`)."""
    if if_match is None or if_match.strip() == "*":
        return None
    raw = if_match.strip()
    if raw.startswith("W/"):
        raise PreconditionFailed("Weak ETags cannot be used with If-Match.")
    raw = raw.strip('"')
    if not raw.isdigit():
        raise PreconditionFailed("If-Match does not match the current version.")
    return int(raw)


IfMatchDep = Annotated[int | None, Depends(if_match)]
