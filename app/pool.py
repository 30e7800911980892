"""A connection pool that hands its connections out first come, first served.

SQLAlchemy's asyncio pool keeps its idle connections in an `asyncio.Queue`, which is not fair
under load. A connection given back is put in the queue and the oldest waiter is only woken; a
request that asks in the meantime (a new one, which first tries `get_nowait`) takes it, and the
woken waiter, finding the queue empty again, goes to the back of the line. Measured with 64
connections posting web forms into `loudou serve --workers 2` (12 connections a process, ~20
requests a process waiting for one): p50 75-90 ms but p99 500-600 ms, a tail of requests
overtaken again and again.

`FairQueue` gives a connection that comes back straight to the oldest live waiter (a future
resolved with it), so nobody can overtake; only when nobody waits does it go back on the
shelf. A waiter that times out or is cancelled is skipped, and a connection handed to a waiter
whose task was cancelled at that moment is passed on to the next, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon

_T = TypeVar("_T")

# SQLAlchemy names a pool's logger after its class's module, and keeps its own loggers at WARNING
# unless asked: under `app`, this pool's INFO lines (disposed, recreating) would print.
logging.getLogger(__name__).setLevel(logging.WARNING)


def _expire(waiter: asyncio.Future[_T]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class FairQueue(QueueCommon[_T]):
    """A FIFO hand-off queue with SQLAlchemy's queue interface (called from the pool's
    synchronous code inside a greenlet; `get` awaits through `await_`)."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[_T] = deque()
        self._waiters: deque[asyncio.Future[_T]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def waiting(self) -> int:
        """Callers waiting for an item now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # timed out or cancelled: skipped
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        self.put_nowait(item)  # never full with waiters: a put has no reason to wait

    def get_nowait(self) -> _T:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        # An item on the shelf means nobody was waiting when it came back: take it.
        if self._items or not block:
            return self.get_nowait()
        return await_(self._wait(expires_after=timeout))

    async def _wait(self, *, expires_after: float | None) -> _T:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_T] = loop.create_future()
        self._waiters.append(waiter)
        expiry = loop.call_later(expires_after, _expire, waiter) if expires_after is not None else None
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed an item just as our task was cancelled: it goes to the next in line.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.put_nowait(waiter.result())
            raise
        except TimeoutError:
            raise Empty() from None
        finally:
            if expiry is not None:
                expiry.cancel()
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)


class FairAsyncAdaptedQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool with `FairQueue` for its idle connections."""

    _queue_class = FairQueue[ConnectionPoolEntry]
