"""WorkerSettings for arq: functions, cron jobs, tuned polling, startup (state + relay)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings

from app.config import Settings, get_settings
from app.observability import instrumented
from app.state import AppState
from app.workers import assignment, followups, jobs, receivables, scheduled, webhooks
from app.workers.registry import assignment_queue
from app.workers.relay import relay_forever


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings from REDIS_URL (redis://, rediss:// or unix://)."""
    if not settings.redis_url:
        return RedisSettings()
    return RedisSettings.from_dsn(settings.redis_url)


async def startup(ctx: dict[str, Any]) -> None:
    """Open the database and Redis handles and start the outbox relay next to the worker."""
    settings: Settings = ctx.get("settings") or get_settings()
    state = AppState.open(settings)
    ctx["state"] = state
    # As in the API's processes (app.main): what startup leaves alive stays out of the collector's walks.
    gc.collect()
    gc.freeze()
    if not ctx.get("relay", True):
        return  # the assignment worker of the same process leaves the relay to the main one
    ctx["relay_stop"] = stop = asyncio.Event()
    ctx["relay_task"] = asyncio.create_task(relay_forever(state, stop), name="outbox-relay")


async def shutdown(ctx: dict[str, Any]) -> None:
    """Stop the relay and close the handles."""
    await stop_relay(ctx)
    state: AppState | None = ctx.pop("state", None)
    if state is not None:
        await state.close()


async def stop_relay(ctx: dict[str, Any]) -> None:
    """Stop the relay task started by `startup` (also used when arq's close fails)."""
    stop: asyncio.Event | None = ctx.get("relay_stop")
    task: asyncio.Task[None] | None = ctx.pop("relay_task", None)
    if stop is not None:
        stop.set()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout=2)


class WorkerSettings:
    """`arq app.workers.WorkerSettings` or `loudou worker`."""

    functions: ClassVar[list[Any]] = [
        instrumented(job)
        for job in (
            jobs.ping,
            webhooks.fan_out_webhooks,
            webhooks.deliver_webhook,
            webhooks.retry_webhook,
            followups.schedule_followup,
            followups.schedule_followups,
            receivables.send_dunning_email,
        )
    ]
    cron_jobs: ClassVar[list[Any]] = [
        cron(scheduled.relay_sweep, second={0, 15, 30, 45}, timeout=30),
        cron(assignment.sla_sweep, second=set(range(0, 60, 2)), timeout=30),
        cron(assignment.recycle_sweep, second=set(range(3, 60, 5)), timeout=30),
        cron(assignment.unassigned_sweep, second={20, 50}, timeout=30),
        cron(followups.overdue_sweep, second=set(range(1, 60, 5)), timeout=30),
        cron(webhooks.sweep_webhooks, second={5, 35}, timeout=30),
        cron(scheduled.purge_idempotency_keys, minute=7, second=0, timeout=60),
        cron(scheduled.expire_quotes, minute={5, 35}, second=0, timeout=60),
        cron(receivables.collections_sweep, minute={2, 17, 32, 47}, second=0, timeout=300),
        # Hourly: each organisation's local midnight falls on some hour; a day is taken once.
        cron(scheduled.snapshot_pipelines, minute=12, second=0, timeout=600),
    ]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(get_settings())
    queue_name = get_settings().queue_name
    # arq's defaults (poll 0.5 s, 10 jobs at once) add up to half a second per job.
    poll_delay = 0.05
    max_jobs = 100
    job_timeout = 30
    keep_result = 3600
    max_tries = 10
    health_check_interval = 30


class AssignmentWorkerSettings(WorkerSettings):
    """The assignment queue's worker (`arq app.workers.settings.AssignmentWorkerSettings`);
    `loudou worker` and `loudou dev` run it next to the main one."""

    # arq reads settings from the class's own __dict__, so nothing can be inherited.
    functions: ClassVar[list[Any]] = [
        instrumented(assignment.assign_lead),
        instrumented(assignment.assign_leads),
    ]
    cron_jobs: ClassVar[list[Any]] = []
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = WorkerSettings.redis_settings
    queue_name = assignment_queue(get_settings())
    ctx: ClassVar[dict[str, Any]] = {"relay": False}
    poll_delay = 0.02
    # Assignments under one rule serialise on its cursor lock: more at once per process only queue
    # on that lock and hold database connections while they wait.
    max_jobs = get_settings().assignment_concurrency
    job_timeout = 5  # a crashed worker's assignment is re-run after timeout + 10 s
    keep_result = 3600
    max_tries = 10
    health_check_interval = 30
