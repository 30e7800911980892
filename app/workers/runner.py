"""Run an arq worker inside a process we control (`loudou dev`, `loudou worker`, tests).

arq's `Worker.main()` returns or raises when Redis goes away, so the worker is rebuilt in a
loop with backoff; signals are left to the caller (handle_signals=False).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.worker import Worker, create_worker
from redis.exceptions import RedisError

from app.config import Settings
from app.workers.registry import assignment_queue
from app.workers.settings import AssignmentWorkerSettings, WorkerSettings, redis_settings, stop_relay

log = structlog.get_logger("loudou.worker")


def build_worker(settings: Settings, kind: type[WorkerSettings] = WorkerSettings, **overrides: Any) -> Worker:
    """An arq Worker for these settings (queue, Redis), without signal handlers."""
    assignment = kind is AssignmentWorkerSettings
    options: dict[str, Any] = {
        "redis_settings": redis_settings(settings),
        "queue_name": assignment_queue(settings) if assignment else settings.queue_name,
        "handle_signals": False,
        "ctx": {"settings": settings, "relay": not assignment},
    }
    options.update(overrides)
    worker: Worker = create_worker(kind, **options)  # type: ignore[arg-type]
    # arq leases every job it starts for (the longest timeout of any function, cron jobs
    # included) + 10 s: with the hour-long sweeps' 600 s, a job whose worker was killed would wait
    # over ten minutes to run again. Lease by the ordinary job timeout instead; the long sweeps
    # are safe to overlap on several workers (locks and once-only claims).
    worker.in_progress_timeout_s = worker.job_timeout_s + 10
    return worker


async def run_worker(settings: Settings, stop: asyncio.Event, *, cron: bool = True) -> None:
    """Run the main worker (jobs, cron, relay) and the assignment worker until `stop` is set
    (`cron=False`: jobs and relay only, e.g. where a test chooses the dates itself)."""
    overrides: dict[str, Any] = {} if cron else {"cron_jobs": []}
    await asyncio.gather(
        run_one(settings, stop, WorkerSettings, **overrides),
        run_one(settings, stop, AssignmentWorkerSettings),
    )


async def run_one(
    settings: Settings, stop: asyncio.Event, kind: type[WorkerSettings], **overrides: Any
) -> None:
    """Keep one worker running until `stop` is set, rebuilding it whenever Redis drops."""
    backoff = 0.5
    while not stop.is_set():
        pool = await _connect(settings)
        if pool is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        backoff = 0.5
        worker = build_worker(settings, kind, redis_pool=pool, **overrides)
        main = asyncio.create_task(worker.main(), name="arq-worker")
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if main in done:
            stopper.cancel()
            exc = main.exception()
            if exc is None:
                await _close(worker)
                return  # burst mode finished
            log.warning("worker.stopped", error=repr(exc), restart_in=backoff)
        else:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await main
        await _close(worker)
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        backoff = min(backoff * 2, 5.0)


async def _connect(settings: Settings) -> ArqRedis | None:
    """A Redis pool that answers PING, or None (closed again, so no connection leaks)."""
    assert settings.redis_url
    pool: ArqRedis = ArqRedis.from_url(settings.redis_url, socket_connect_timeout=2.0)
    try:
        await pool.ping()
    except (RedisError, OSError) as exc:
        log.info("worker.redis_unreachable", error=repr(exc))
        await pool.aclose()
        return None
    return pool


async def _close(worker: Worker) -> None:
    try:
        await asyncio.wait_for(worker.close(), timeout=5)
        return
    except (Exception, asyncio.CancelledError) as exc:  # Redis may be gone mid-close
        log.info("worker.close_incomplete", error=repr(exc))
    # arq's close stops at the first Redis error: release what it would have released.
    await stop_relay(worker.ctx)
    state = worker.ctx.pop("state", None)
    if state is not None:
        with contextlib.suppress(Exception):
            await state.close()
    pool = getattr(worker, "_pool", None)
    if pool is not None:
        with contextlib.suppress(Exception):
            await pool.aclose()
        worker._pool = None
