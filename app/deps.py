"""FastAPI dependencies as Annotated aliases: SessionDep, PrincipalDep, PageDep, IfMatchDep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app import ratelimit
from app.config import Settings
from app.db import scope_session
from app.errors import Forbidden, Unauthorized
from app.models.common import Role
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


@asynccontextmanager
async def request_session(state: AppState) -> AsyncIterator[AsyncSession]:
    """One session and one transaction for a request, committed at the end of the block (before
    the response is sent), rolled back if it raises.

    A session that never began a transaction and holds no object (a public intake post served
    from the caches and the fast path) is neither committed nor closed: there is nothing to end
    or release, and the two no-ops cost a quarter of a millisecond on the busiest request."""
    session = state.sessions()
    try:
        yield session
    except BaseException:
        if _touched(session):
            await session.rollback()
        raise
    else:
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            await session.commit()
    finally:
        if _touched(session):
            await session.close()


def _touched(session: AsyncSession) -> bool:
    """Whether a session has begun a transaction or holds objects (closing it then matters)."""
    return session.in_transaction() or bool(session.identity_map) or bool(session.new)


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """The request's session (`request_session`) as a dependency."""
    async with request_session(state) as session:
        yield session


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


async def _read_only(session: AsyncSession, settings: Settings) -> None:
    await session.execute(
        text(
            "SELECT set_config('transaction_read_only', 'on', true), "
            "set_config('statement_timeout', :timeout, true), set_config('work_mem', :work_mem, true)"
        ),
        {"timeout": f"{settings.metrics_statement_timeout_ms}ms", "work_mem": settings.metrics_work_mem},
    )


async def get_read_session(
    state: StateDep, principal: PrincipalDep, session: SessionDep
) -> AsyncIterator[AsyncSession]:
    """A read-only session for metrics and exports, scoped to the caller's organisation, every statement
    under LOUDOU_METRICS_STATEMENT_TIMEOUT_MS: the replica's when DATABASE_READ_URL is set, else the
    request's own (its transaction made read-only: one connection per request, not two)."""
    if state.read_sessions is None:
        await _read_only(session, state.settings)
        yield session
        return
    async with state.read_sessions() as replica:
        scope_session(replica, principal.org_id)
        await _read_only(replica, state.settings)
        try:
            yield replica
        finally:
            await replica.rollback()


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


ROLE_ORDER = (Role.viewer, Role.rep, Role.manager, Role.admin)


class Require:
    """A dependency that lets the request through only if role and key scopes allow `scope` and,
    when `role` is given, the caller's role is at least that. It keeps both as attributes, so the
    authorisation table of every operation can be read off the routes (tests/contract)."""

    def __init__(self, scope: str, role: Role | None = None) -> None:
        self.scope = scope
        self.role = role

    @property
    def min_role(self) -> Role:
        """The lowest role that may call: the declared one, else what the scope's action needs."""
        if self.role is not None:
            return self.role
        return Role.viewer if self.scope.partition(":")[2] == "read" else Role.rep

    async def __call__(self, principal: PrincipalDep) -> Principal:
        if not principal.allows(self.scope):
            raise Forbidden(f"This credential may not do `{self.scope}`.")
        if ROLE_ORDER.index(principal.role) < ROLE_ORDER.index(self.min_role):
            raise Forbidden(f"Only {self.min_role.value}s and above may do this.")
        return principal


def require(scope: str, role: Role | None = None) -> Require:
    """See Require."""
    return Require(scope, role)


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


ETAG_PATTERN = r'^(\*|"[0-9]{1,18}"|[0-9]{1,18})$'


async def if_match(
    if_match: Annotated[
        str | None,
        Header(
            description='ETag from a GET (`"<version>"`) or `*`; 412 if stale.',
            pattern=ETAG_PATTERN,
        ),
    ] = None,
) -> int | None:
    """The version the client last saw, from `If-Match: "<version>"` (None when not sent or `*`).
    A value that is not one of this API's ETags is a 422 like any malformed parameter, so the 412
    means only what it says: the resource changed since that version."""
    if if_match is None or if_match == "*":
        return None
    return int(if_match.strip('"'))


IfMatchDep = Annotated[int | None, Depends(if_match)]
