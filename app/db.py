"""Async engine, sessions, the metadata naming convention, and tenant scoping.

Tenant scoping is one mechanism for the whole code base: a session carries the caller's
organisation in `session.info["org_id"]`, and every ORM statement on it gets
`org_id = :org` added for every tenant table it touches (SQLAlchemy's `with_loader_criteria`),
including `session.get`. A statement on a session with no organisation fails loudly unless it
is explicitly marked cross-tenant with `execution_options(cross_tenant=True)` (used by auth
look-ups and by worker sweeps). New tenant rows get the session's organisation on flush; a row
of another organisation cannot be flushed through it.

Every tenant table's primary key is `(org_id, id)` (docs/scale.md), so `session.get(Model, id)`
is completed with the session's organisation (`TenantSession.get`): the look-up is one primary
key probe in the caller's organisation, and another organisation's id finds nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
from sqlalchemy import Dialect, TextClause, event, make_url
from sqlalchemy import column as sql_column
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.util import greenlet_spawn
from sqlmodel import SQLModel

from app.config import Settings
from app.pool import FairAsyncAdaptedQueuePool

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


class TenantScoped:
    """Marker for tables that carry `org_id`; every query on them is scoped by organisation."""

    if TYPE_CHECKING:
        org_id: uuid.UUID


def seal_tenant_marker() -> None:
    """Give the marker an `org_id` expression, once every table class exists.

    with_loader_criteria analyses its lambda once against the marker class itself, then applies
    it to each mapped subclass, where org_id is the real column. Set any earlier, the attribute
    would leak into the declarative scan of each table class.
    """
    TenantScoped.org_id = sql_column("org_id")  # type: ignore[assignment]


class TenancyError(RuntimeError):
    """A query reached a tenant table without an organisation: a programming error."""


def create_engine(settings: Settings, *, url: str | None = None, pool_size: int | None = None) -> AsyncEngine:
    """The async engine for DATABASE_URL (asyncpg)."""
    target = url or settings.database_url
    if not target:
        raise RuntimeError("DATABASE_URL is not set (and no embedded server was started)")
    # A connect that hangs (a server gone without refusing) fails after the timeout, as a 503.
    connect_args: dict[str, Any] = {
        "server_settings": server_settings(settings),
        "timeout": settings.db_connect_timeout_seconds,
    }
    if not wants_ssl(target):
        connect_args["ssl"] = False
    return create_async_engine(
        target,
        poolclass=FairAsyncAdaptedQueuePool,  # first come, first served under load (app.pool)
        pool_size=pool_size or settings.db_pool_size,
        # A one-off command's small pool (pool_size given) may still open a few more.
        max_overflow=settings.db_max_overflow if pool_size is None else max(settings.db_max_overflow, 4),
        pool_pre_ping=settings.db_pre_ping,
        pool_recycle=1800,
        connect_args=connect_args,
    )


async def fill_pool(engine: AsyncEngine, size: int) -> int:
    """Open `size` pooled connections now and hand them back, so a server meets its first load
    with a full pool instead of opening backends one by one in the middle of it (each a fork of
    PostgreSQL's and an authentication). Best effort: a connection that fails (the database is
    down: each attempt gives up after the connect timeout) is left to the first requests, which
    answer 503 until it is back. Returns how many were opened."""
    held: list[AsyncConnection] = []

    async def one() -> None:
        held.append(await engine.connect())

    try:
        await asyncio.gather(*(one() for _ in range(size)), return_exceptions=True)
    finally:
        for connection in held:
            await connection.close()
    return len(held)


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def wants_ssl(url: str) -> bool:
    """Whether a connection to `url` should try SSL. asyncpg's default (`prefer`) opens every
    connection with an SSL request, a round trip wasted on a loopback or unix-socket server that
    has none; so SSL is off there unless the URL asks for it (`ssl=` or `sslmode=`). A remote
    host keeps asyncpg's default."""
    parsed = make_url(url)
    if "ssl" in parsed.query or "sslmode" in parsed.query:
        return True
    host = parsed.host or str(parsed.query.get("host") or "")
    return not (host == "" or host.startswith("/") or host in _LOCAL_HOSTS)


def server_settings(settings: Settings) -> dict[str, str]:
    """The session settings every connection starts with (timeouts in milliseconds). Behind
    pgbouncer in transaction mode, add these to `ignore_startup_parameters` or set them on the
    database role (ALTER ROLE … SET statement_timeout = …) instead."""
    return {
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "lock_timeout": str(settings.db_lock_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.db_idle_in_transaction_timeout_ms),
    }


class TenantSession(Session):
    """A Session whose `get` of a tenant row by its id adds the session's organisation, the
    first column of every tenant primary key: `get(Lead, lead_id)` looks up `(org_id, lead_id)`."""

    def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        """`Session.get`, with a tenant table's bare id completed by the session's organisation."""
        if (
            isinstance(entity, type)
            and issubclass(entity, TenantScoped)
            and not isinstance(ident, dict | tuple)
        ):
            org_id = self.info.get("org_id")
            if org_id is None:
                raise TenancyError("get() of a tenant row from a session without an organisation")
            keys = [column.key for column in sa_inspect(entity).primary_key]
            ident = {"org_id": org_id, next(k for k in keys if k != "org_id"): ident}
        return super().get(entity, ident, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit, with the tenant-scoped `get`."""
    return async_sessionmaker(
        engine, class_=AsyncSession, sync_session_class=TenantSession, expire_on_commit=False
    )


@asynccontextmanager
async def tenant_session(
    factory: async_sessionmaker[AsyncSession], org_id: uuid.UUID
) -> AsyncIterator[AsyncSession]:
    """A session scoped to one organisation (for jobs; requests get theirs from deps)."""
    async with factory() as session:
        session.info["org_id"] = org_id
        yield session


def scope_session(session: AsyncSession, org_id: uuid.UUID) -> None:
    """Bind a session to an organisation; from now on every query on it is filtered by it."""
    session.info["org_id"] = org_id


@event.listens_for(Session, "do_orm_execute")
def _scope_by_organisation(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get("cross_tenant"):
        return
    org_id = state.session.info.get("org_id")
    if org_id is None:
        if _touches_tenant_table(state):
            raise TenancyError("query on a tenant table from a session without an organisation")
        return
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantScoped,
            lambda cls: cls.org_id == org_id,
            include_aliases=True,
        )
    )


def _touches_tenant_table(state: ORMExecuteState) -> bool:
    return any(issubclass(mapper.class_, TenantScoped) for mapper in state.all_mappers)


@event.listens_for(Session, "before_flush")
def _stamp_organisation(session: Session, flush_context: Any, instances: Any) -> None:
    org_id = session.info.get("org_id")
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, TenantScoped):
            continue
        if obj.org_id is None and org_id is not None:
            obj.org_id = org_id
        elif org_id is not None and obj.org_id != org_id:
            raise TenancyError("refusing to write a row of another organisation")
        elif obj.org_id is None:
            raise TenancyError("a tenant row needs an organisation")


# --- Text statements, run through a session or directly on its asyncpg connection -------------
#
# The intake hot path writes a new lead with one fixed text statement. Run through the ORM
# session (begin, execution events, bind processing, commit) it costs several times the CPU of
# the same statement sent straight to asyncpg. `Statements` lets one piece of code run them
# either way: `SessionStatements` inside the session's transaction, `DriverStatements` on an
# asyncpg connection from the pool, each statement its own transaction (see `direct_statements`).


class Statements(Protocol):
    """Where a text statement runs: `fetch` rows, `fetchval` the first column of the first row."""

    async def fetch(self, stmt: TextClause, params: dict[str, Any]) -> Sequence[Sequence[Any]]: ...

    async def fetchval(self, stmt: TextClause, params: dict[str, Any]) -> Any: ...


class SessionStatements:
    """Text statements in the session's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def fetch(self, stmt: TextClause, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """All rows."""
        return (await self.session.execute(stmt, params)).all()

    async def fetchval(self, stmt: TextClause, params: dict[str, Any]) -> Any:
        """The first column of the first row (None without rows)."""
        return (await self.session.execute(stmt, params)).scalar()


@dataclass(frozen=True)
class _DriverSQL:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [
            process(params[name]) if process else params[name]
            for name, process in zip(self.names, self.processors, strict=True)
        ]


_DRIVER_SQL: dict[int, tuple[TextClause, _DriverSQL]] = {}


def driver_sql(stmt: TextClause, dialect: Dialect) -> _DriverSQL:
    """`stmt` compiled once for asyncpg: `$n` SQL (with SQLAlchemy's bind casts), the bind names
    in order and each one's bind processor (JSON serialisation), as SQLAlchemy would send them."""
    entry = _DRIVER_SQL.get(id(stmt))
    if entry is None or entry[0] is not stmt:
        compiled = stmt.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
        )
        entry = (stmt, _DriverSQL(compiled.string, names, processors))
        _DRIVER_SQL[id(stmt)] = entry
    return entry[1]


class DriverStatements:
    """Text statements straight on an asyncpg connection (module-level statements only: each is
    compiled once and cached by identity)."""

    def __init__(self, driver: Any, dialect: Dialect) -> None:
        self.driver = driver
        self.dialect = dialect

    async def fetch(self, stmt: TextClause, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """All rows."""
        compiled = driver_sql(stmt, self.dialect)
        rows: Sequence[Sequence[Any]] = await self.driver.fetch(compiled.sql, *compiled.args(params))
        return rows

    async def fetchval(self, stmt: TextClause, params: dict[str, Any]) -> Any:
        """The first column of the first row (None without rows)."""
        compiled = driver_sql(stmt, self.dialect)
        return await self.driver.fetchval(compiled.sql, *compiled.args(params))


@asynccontextmanager
async def direct_statements(session: AsyncSession) -> AsyncIterator[DriverStatements | None]:
    """An asyncpg connection from the session's pool for statements that each commit on their
    own (autocommit), when the session has not begun a transaction yet; else None, and the
    caller goes through the session, whose transaction may hold what it has written so far."""
    engine = session.bind
    if session.in_transaction() or not isinstance(engine, AsyncEngine):
        yield None
        return
    async with engine_statements(engine) as run:
        yield run


@asynccontextmanager
async def engine_statements(engine: AsyncEngine) -> AsyncIterator[DriverStatements]:
    """An asyncpg connection from `engine`'s pool for statements that each commit on their own
    (autocommit), given back to the pool at the end."""
    raw = await engine.raw_connection()
    try:
        yield DriverStatements(raw.driver_connection, engine.dialect)
    except BaseException as exc:
        if isinstance(exc, asyncpg.PostgresError):  # the server refused a statement: still usable
            await greenlet_spawn(raw.close)
        else:  # lost, cancelled mid-statement or never used: not worth handing out again
            await greenlet_spawn(raw.invalidate, exc)
        raise
    # Back to the pool; the pool's reset is SQLAlchemy's own synchronous code, hence the greenlet.
    await greenlet_spawn(raw.close)
