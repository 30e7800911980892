"""Intake posts that arrive together are written together: one statement for the candidate
look-ups of all of them, one for their new leads.

Why: under load an API process has tens of web-form posts in flight, and each new lead paid two
round trips of its own (the candidates, then lock-check-insert), each a statement PostgreSQL
starts, plans, runs and commits and a socket send that wakes its backend. Measured on the
2-core VM, those per-statement costs were about as large as the rows' own work. A `Batcher`
collects what the requests of one process ask while earlier statements are running and sends it
as one statement when a connection is free: at low load a post goes alone at once, as before;
under load each statement carries many posts.

The rules of the single-post path hold for each post: the look-up answers each post what
`loudou_intake_candidates` answers it alone, and the insert locks every post's email and phone
(sorted across the batch, the order single posts use too) and inserts a post's rows only when no
open lead has its email or phone (`leads.direct.insert_batch`). Two posts that share a key never
go in one batch: the second waits for the next, and so finds the first. When a batch statement
fails, each of its posts is sent again alone, so one bad post gets its own error and the others
go in.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import DriverStatements, Statements, engine_statements
from app.services.leads.direct import insert_batch, insert_unless_open_lead, lock_keys
from app.services.leads.normalise import LeadInput

Item = TypeVar("Item")
Result = TypeVar("Result")

# What a statement refusing a value raises (the server's error; a value asyncpg or orjson cannot
# encode): the connection is fine and the posts of the batch are sent again one by one. Anything
# else (a lost connection) fails the batch, and the connection is dropped from the pool.
REFUSED = (asyncpg.PostgresError, ValueError, TypeError)
BATCH_LIMIT = 64  # posts a statement at most (its JSON and its arrays stay small)
IN_FLIGHT = 2  # statements of one kind a process runs at once (two backends busy per process)


@dataclass
class Batcher(Generic[Item, Result]):
    """Runs `send(run, items)` for what `submit` collects, at most `in_flight` statements at a
    time on connections of `engine`; `alone(run, item)` for each item of a batch that failed.
    `keys(item)`: what two items of one batch may not share."""

    engine: AsyncEngine
    send: Callable[[DriverStatements, list[Item]], Awaitable[list[Result]]]
    alone: Callable[[DriverStatements, Item], Awaitable[Result]]
    keys: Callable[[Item], Iterable[Hashable]] = lambda item: ()
    limit: int = BATCH_LIMIT
    in_flight: int = IN_FLIGHT
    _pending: deque[tuple[Item, asyncio.Future[Result]]] = field(default_factory=deque)
    _running: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def submit(self, item: Item) -> Result:
        """`item`'s result, from the next statement that has room for it."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): nothing of the old one carries over
            self._loop, self._pending, self._running, self._tasks = loop, deque(), 0, set()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._running < self.in_flight:
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """The next batch: pending items in order, up to `limit`, leaving for later any item
        that shares a key with one already taken (and any cancelled meanwhile)."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        taken: set[Hashable] = set()
        left: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        while self._pending and len(batch) < self.limit:
            item, future = self._pending.popleft()
            if future.done():
                continue
            keys = set(self.keys(item))
            if keys & taken:
                left.append((item, future))
                continue
            taken |= keys
            batch.append((item, future))
        left.extend(self._pending)
        self._pending = left
        return batch

    async def _drain(self) -> None:
        try:
            while batch := self._take():
                await self._run(batch)
        finally:
            self._running -= 1

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            async with engine_statements(self.engine) as run:
                try:
                    results = await self.send(run, [item for item, _ in batch])
                except REFUSED:
                    # Refused as a whole (say one post's value PostgreSQL cannot store): each
                    # post alone, so the error is that post's only.
                    for item, future in batch:
                        try:
                            _settle(future, result=await self.alone(run, item))
                        except REFUSED as exc:
                            _settle(future, error=exc)
                    return
            for (_, future), result in zip(batch, results, strict=True):
                _settle(future, result=result)
        except BaseException as exc:
            # The connection failed (`engine_statements` has dropped it from the pool) or the
            # task was cancelled: every post still waiting shares the fate of its statement.
            for _, future in batch:
                if isinstance(exc, Exception):
                    _settle(future, error=exc)
                elif not future.done():
                    future.cancel()
            if not isinstance(exc, Exception):
                raise


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: Exception | None = None) -> None:
    if future.done():  # its request gave up waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# --- The two intake statements ------------------------------------------------------------------

# For each post, in the posts' order, what `loudou_intake_candidates` (migration
# speed0009candidates) answers it alone, from one query for the whole batch (migration
# speed0011setbased: a statement a post cost more to start than its index scans cost to run).
_CANDIDATES = text(
    "SELECT c.open_id, c.ids, c.labels"
    " FROM loudou_intake_candidates_many(CAST(:orgs AS uuid[]), CAST(:emails AS text[]),"
    " CAST(:phones AS text[]), CAST(:companies AS text[]), CAST(:names AS text[])) AS c ORDER BY c.i"
)

Candidates = tuple[Any, tuple[list[Any], list[str]]]  # open lead id or None; (ids, labels)
Lookup = tuple[uuid.UUID, LeadInput]
Rows = list[tuple[Table, dict[str, Any]]]
Insert = tuple[Rows, tuple[str | None, str | None], str | None]  # rows, (email, phone), notify


async def look_up_many(run: Statements, items: list[Lookup]) -> list[Candidates]:
    """For each (organisation, post): its open lead, else its fuzzy candidates, in one statement."""
    params = {
        "orgs": [org for org, _ in items],
        "emails": [data.email for _, data in items],
        "phones": [data.phone for _, data in items],
        "companies": [data.company for _, data in items],
        "names": [data.name for _, data in items],
    }
    rows = await run.fetch(_CANDIDATES, params)
    return [(open_id, (ids or [], labels or [])) for open_id, ids, labels in rows]


async def _candidates_alone(run: DriverStatements, item: Lookup) -> Candidates:
    return (await look_up_many(run, [item]))[0]


async def _insert(run: DriverStatements, items: list[Insert]) -> list[Any]:
    if len({tuple(table.name for table, _ in rows) for rows, _, _ in items}) > 1:
        return [await _insert_alone(run, item) for item in items]  # no intake post does this
    notify = next((channel for _, _, channel in items if channel), None)
    return await insert_batch(run, [(rows, contact) for rows, contact, _ in items], notify=notify)


async def _insert_alone(run: DriverStatements, item: Insert) -> Any:
    rows, contact, notify = item
    return await insert_unless_open_lead(run, rows, notify=notify, unless_open_lead=contact)


def _insert_keys(item: Insert) -> list[str]:
    rows, (email, phone), _ = item
    return lock_keys(rows[0][1]["org_id"], email, phone)


@dataclass
class IntakeBatches:
    """The two batchers of one engine."""

    candidates: Batcher[Lookup, Candidates]
    inserts: Batcher[Insert, Any]


_BY_ENGINE: weakref.WeakKeyDictionary[Any, IntakeBatches] = weakref.WeakKeyDictionary()


def intake_batches(engine: AsyncEngine) -> IntakeBatches:
    """The batchers of `engine` (one per engine: one per API process)."""
    found = _BY_ENGINE.get(engine.sync_engine)
    if found is None:
        found = _BY_ENGINE[engine.sync_engine] = IntakeBatches(
            candidates=Batcher(engine, look_up_many, _candidates_alone),
            inserts=Batcher(engine, _insert, _insert_alone, keys=_insert_keys),
        )
    return found


async def look_up(engine: AsyncEngine, org_id: uuid.UUID, data: LeadInput) -> Candidates:
    """The open lead with `data`'s email or phone (None when there is none), else the fuzzy
    candidates: `loudou_intake_candidates`, batched."""
    return await intake_batches(engine).candidates.submit((org_id, data))


async def insert(
    engine: AsyncEngine, rows: Rows, *, contact: tuple[str | None, str | None], notify: str | None
) -> Any:
    """`leads.direct.insert_unless_open_lead`, batched: the id of the open lead with the email
    or phone of `contact` that stopped the insert, or None when the rows went in."""
    return await intake_batches(engine).inserts.submit((rows, contact, notify))
