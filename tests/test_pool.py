"""The connection pool hands connections out first come, first served (app.pool)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import text
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from app.config import Settings
from app.db import create_engine
from app.logging import configure_logging
from app.pool import FairAsyncAdaptedQueuePool, FairQueue


async def _get(queue: FairQueue[str], timeout: float | None = 5.0) -> str:
    # The pool calls `get` from its synchronous code inside a greenlet, as here.
    item: str = await greenlet_spawn(queue.get, True, timeout)
    return item


async def _until_waiting(queue: FairQueue[str], count: int) -> None:
    for _ in range(200):
        if queue.waiting() == count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{queue.waiting()} waiting, not {count}")


async def _two_waiters(queue: FairQueue[str]) -> tuple[asyncio.Task[str], asyncio.Task[str]]:
    first = asyncio.create_task(_get(queue))
    await _until_waiting(queue, 1)
    second = asyncio.create_task(_get(queue))
    await _until_waiting(queue, 2)
    return first, second


async def test_a_returned_item_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    queue: FairQueue[str] = FairQueue(2)
    first, second = await _two_waiters(queue)

    queue.put("a", False)
    # A newcomer asking in the same moment (before the woken waiter has run) must not take it:
    # an asyncio.Queue would give it "a" and send the woken waiter to the back of the line.
    newcomer = asyncio.create_task(_get(queue))
    assert await first == "a"
    await _until_waiting(queue, 2)
    queue.put("b", False)
    assert await second == "b"
    queue.put("c", False)
    assert await newcomer == "c"
    assert queue.qsize() == 0

    queue.put("d", False)  # nobody waiting: back on the shelf, taken at once next time
    assert queue.qsize() == 1
    assert await _get(queue) == "d"


async def test_a_waiter_that_times_out_gets_empty_and_is_skipped_afterwards() -> None:
    queue: FairQueue[str] = FairQueue(1)
    with pytest.raises(Empty):
        await _get(queue, timeout=0.05)
    assert queue.waiting() == 0
    queue.put("a", False)
    assert queue.qsize() == 1  # not handed to the expired waiter
    assert queue.get(False) == "a"
    with pytest.raises(Empty):
        queue.get(False)


async def test_an_item_handed_to_a_cancelled_waiter_passes_to_the_next() -> None:
    queue: FairQueue[str] = FairQueue(1)
    first, second = await _two_waiters(queue)

    queue.put("a", False)  # handed to `first`, which is cancelled before it runs again
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "a"


async def test_the_engine_serves_waiting_requests_in_arrival_order(settings: Settings) -> None:
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
    assert isinstance(engine.pool, FairAsyncAdaptedQueuePool)
    served: list[int] = []

    async def request(n: int) -> None:
        async with engine.connect() as conn:
            served.append(n)
            await conn.execute(text("SELECT pg_sleep(0.02)"))

    try:
        holder = await engine.raw_connection()
        waiting = []
        for n in range(5):
            waiting.append(asyncio.create_task(request(n)))
            await asyncio.sleep(0.02)  # each queues behind the one before
        await greenlet_spawn(holder.close)
        # The connection has just come back and the first waiter is woken but has not run yet:
        # a request asking now (SQLAlchemy's own pool hands it the connection) queues behind all.
        await request(99)
        await asyncio.gather(*waiting)
        assert served == [0, 1, 2, 3, 4, 99]
    finally:
        await engine.dispose()


def test_the_pools_info_lines_stay_quiet_as_sqlalchemys_own_do() -> None:
    configure_logging("INFO")
    assert logging.getLogger("app").isEnabledFor(logging.INFO)
    for name in ("sqlalchemy.pool.impl.AsyncAdaptedQueuePool", "app.pool.FairAsyncAdaptedQueuePool"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger(name).isEnabledFor(logging.WARNING), name
