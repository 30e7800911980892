"""Worker and queue metrics on the API's /metrics, whichever process did the work.

Jobs count their outcomes in a Redis hash (shared by every worker process); at scrape time the
API reads that hash, the queue depth and age of the oldest due job (arq's sorted set), and the
outbox backlog from PostgreSQL, and exposes them next to the HTTP metrics.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import asyncpg
import structlog
from arq import Retry
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.state import AppState

access_log = structlog.get_logger("loudou.access")

JOB_STATS_KEY = "loudou:metrics:jobs"

P = ParamSpec("P")
R = TypeVar("R")


TRANSIENT = (
    OSError,
    TimeoutError,
    RedisError,
    OperationalError,
    InterfaceError,
    asyncpg.PostgresConnectionError,
)


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: the database or Redis was unreachable, a connection dropped."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


def backoff(job_try: int) -> float:
    """Seconds before the next try: 1, 2, 4 … capped at 60."""
    return float(min(60, 2 ** max(0, job_try - 1)))


def instrumented(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Count a job's outcome (ok, retry, failed), run time and queue lag in Redis, and turn
    transient failures into arq's Retry with backoff (arq fails a job for good on any other
    exception)."""

    @functools.wraps(fn)
    async def wrapper(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> R:
        started = time.time()
        enqueued = ctx.get("enqueue_time")
        outcome = "failed"
        try:
            result = await fn(ctx, *args, **kwargs)
            outcome = "ok"
            return result
        except Retry:
            outcome = "retry"
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            outcome = "retry"
            raise Retry(defer=backoff(int(ctx.get("job_try", 1)))) from exc
        finally:
            await _count(ctx, fn.__name__, outcome, time.time() - started, enqueued, started)

    return wrapper


async def _count(
    ctx: dict[str, Any], name: str, outcome: str, seconds: float, enqueued: Any, started: float
) -> None:
    redis = ctx.get("redis")
    if redis is None:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(JOB_STATS_KEY, f"{name}|{outcome}", 1)
            pipe.hincrbyfloat(JOB_STATS_KEY, f"{name}|seconds", seconds)
            if enqueued is not None and ctx.get("job_try", 1) == 1:
                pipe.hincrbyfloat(JOB_STATS_KEY, f"{name}|lag", max(0.0, started - enqueued.timestamp()))
                pipe.hincrby(JOB_STATS_KEY, f"{name}|lagged", 1)
            await pipe.execute()
    except (RedisError, OSError):
        pass  # metrics never fail a job


class QueueCollector(Collector):
    """Exposes the last snapshot taken by `refresh` (prometheus collectors cannot await)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}

    def collect(self) -> Iterator[Any]:
        """Yield the metric families of the latest snapshot."""
        snap = self.snapshot
        jobs = CounterMetricFamily(
            "loudou_jobs", "Jobs finished, by job and outcome", labels=["job", "outcome"]
        )
        seconds = CounterMetricFamily("loudou_job_seconds", "Time spent running jobs", labels=["job"])
        lag = CounterMetricFamily(
            "loudou_job_lag_seconds", "Enqueue-to-start delay, summed over first tries", labels=["job"]
        )
        lagged = CounterMetricFamily("loudou_job_lag_samples", "First tries measured for lag", labels=["job"])
        for field, value in snap.get("jobs", {}).items():
            name, _, kind = field.partition("|")
            if kind == "seconds":
                seconds.add_metric([name], float(value))
            elif kind == "lag":
                lag.add_metric([name], float(value))
            elif kind == "lagged":
                lagged.add_metric([name], float(value))
            else:
                jobs.add_metric([name, kind], float(value))
        yield from (jobs, seconds, lag, lagged)
        depth = GaugeMetricFamily("loudou_queue_depth", "Jobs waiting in the arq queue", labels=["queue"])
        oldest = GaugeMetricFamily(
            "loudou_queue_oldest_due_seconds", "How late the oldest due job is", labels=["queue"]
        )
        for queue, (count, age) in snap.get("queues", {}).items():
            depth.add_metric([queue], count)
            oldest.add_metric([queue], age)
        yield from (depth, oldest)
        if "outbox_pending" in snap:
            yield GaugeMetricFamily(
                "loudou_outbox_pending", "Outbox events not yet relayed", value=snap["outbox_pending"]
            )
            yield GaugeMetricFamily(
                "loudou_outbox_oldest_pending_seconds",
                "Age of the oldest unrelayed event",
                value=snap["outbox_age"],
            )


HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests by route template, method and status class",
    ["handler", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration by route template and method",
    ["handler", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UNMEASURED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class RequestTimingMiddleware:
    """Times each request once: its count and latency per route template (never raw paths: ids
    stay out of labels) and, with `access_log`, one structured log line (method, route, status,
    duration, organisation; the request id is added by app.logging).

    Written here rather than taken from an instrumentation package: this one observes two
    series per request, which on the intake hot path costs a tenth of what the package did.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMEASURED_PATHS:
            await self.app(scope, receive, send)
            return
        await timed(self.app, scope, receive, send, log=self.access_log)


async def timed(app: ASGIApp, scope: Scope, receive: Receive, send: Send, *, log: bool) -> None:
    """Run `app` for one HTTP request, then count and time it by route template and, with `log`,
    write its access-log line: RequestTimingMiddleware's work, shared with the intake lane."""
    started = time.perf_counter()
    status = 500

    async def tracking_send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    finally:
        seconds = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None)
        handler = route or "unmatched"
        HTTP_REQUESTS.labels(handler, scope["method"], f"{status // 100}xx").inc()
        HTTP_LATENCY.labels(handler, scope["method"]).observe(seconds)
        if log:
            principal = scope.get("state", {}).get("principal")
            access_log.info(
                "request",
                method=scope["method"],
                path=loggable_path(scope["path"]),
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                org_id=str(principal.org_id) if principal is not None else None,
            )


def loggable_path(path: str) -> str:
    """The path for logs: an intake source's key is a credential, so it is never written out."""
    if path.startswith("/v1/intake/"):
        parts = path.split("/")
        if len(parts) >= 5 and parts[4]:
            parts[4] = "***"
        return "/".join(parts)
    return path


COLLECTOR = QueueCollector()
REGISTRY.register(COLLECTOR)


def registry() -> CollectorRegistry:
    """What /metrics renders: the process registry, or with `serve --workers N` (multiprocess
    mode, PROMETHEUS_MULTIPROC_DIR set) every worker process's metrics merged."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    merged = CollectorRegistry()
    MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    merged.register(COLLECTOR)
    return merged


async def refresh(state: AppState, queues: list[str]) -> None:
    """Take a new snapshot: job counters and queues from Redis, the outbox backlog from PostgreSQL."""
    snap: dict[str, Any] = {}
    now_ms = time.time() * 1000
    try:
        raw: dict[bytes, bytes] = await state.redis.hgetall(JOB_STATS_KEY)  # type: ignore[misc]
        snap["jobs"] = {k.decode(): v.decode() for k, v in raw.items()}
        snap["queues"] = {}
        for queue in queues:
            count = await state.redis.zcard(queue)
            due = await state.redis.zrangebyscore(queue, "-inf", now_ms, start=0, num=1, withscores=True)
            age = max(0.0, (now_ms - due[0][1]) / 1000) if due else 0.0
            snap["queues"][queue] = (float(count), age)
    except (RedisError, OSError):
        pass
    try:
        async with state.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
                        "FROM outbox WHERE dispatched_at IS NULL"
                    )
                )
            ).one()
        snap["outbox_pending"], snap["outbox_age"] = float(row[0]), float(row[1])
    except Exception as exc:  # a metrics scrape must answer even with the database down
        snap["outbox_error"] = type(exc).__name__
    COLLECTOR.snapshot = snap
