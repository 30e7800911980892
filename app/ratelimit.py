"""Rate limits: fixed one-minute windows in Redis, shared by every API process, with a local
in-process limiter while Redis is unreachable.

Each request counts against a few keys at once (its credential or intake source, and its client
address) in one Redis round trip (INCR + EXPIRE per key, pipelined). The tightest of them is
advertised on every answer with the IETF draft headers (draft-ietf-httpapi-ratelimit-headers-10):
`RateLimit-Policy: "key";q=1200;w=60` and `RateLimit: "key";r=1187;t=34`; past a limit the answer
is a 429 with `Retry-After` (the seconds to the next window).

If Redis fails, the same windows are counted in this process (each process then allows up to the
limit on its own) and Redis is left alone for a second before it is tried again, so an outage costs
no request more than one failed round trip. Hand-written because it is a few Redis commands on the
connection the app already holds; a library would add its own client and storage layer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.config import Settings
from app.errors import RateLimited

WINDOW_SECONDS = 60
# After a Redis failure, count locally for this long before trying Redis again.
REDIS_BACKOFF_SECONDS = 1.0
STATE_KEY = "ratelimit"  # where the tightest decision of a request is kept (scope["state"])


@dataclass(frozen=True)
class Limit:
    """One quota: `limit` requests a window for `key`; `policy` names it in the headers."""

    key: str
    limit: int
    policy: str
    message: str


@dataclass(frozen=True)
class Decision:
    """Where a request stands against one quota."""

    policy: str
    limit: int
    remaining: int
    reset: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        """`RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10)."""
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={WINDOW_SECONDS}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}',
        }


class LocalWindows:
    """Fixed windows counted in this process: the fallback while Redis is unreachable."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.window = -1
        self.redis_retry_at = 0.0

    def incr(self, window_key: str, window: int) -> int:
        if window != self.window:  # a new minute: forget the last one
            self.counts.clear()
            self.window = window
        self.counts[window_key] = self.counts.get(window_key, 0) + 1
        return self.counts[window_key]


_local = LocalWindows()


def local_windows() -> LocalWindows:
    """This process's fallback counters (tests reset them)."""
    return _local


async def _count(redis: Redis, window_keys: Sequence[str], window: int) -> list[int]:
    now = time.monotonic()
    if now >= _local.redis_retry_at:
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for window_key in window_keys:
                    pipe.incr(window_key)
                    pipe.expire(window_key, WINDOW_SECONDS + 1)
                replies = await pipe.execute()
            return [int(count) for count in replies[::2]]
        except (RedisError, OSError):
            _local.redis_retry_at = now + REDIS_BACKOFF_SECONDS
    return [_local.incr(window_key, window) for window_key in window_keys]


async def check(redis: Redis, limits: Sequence[Limit]) -> Decision | None:
    """Count one request against each limit (those <= 0 are off). Past any of them a 429 with
    `Retry-After` and the rate-limit headers of the one exceeded; else the tightest decision
    (fewest remaining), for the answer's headers. None when every limit is off."""
    active = [limit for limit in limits if limit.limit > 0]
    if not active:
        return None
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    reset = max(1, int(WINDOW_SECONDS - (now % WINDOW_SECONDS)) + 1)
    counts = await _count(redis, [f"{limit.key}:{window}" for limit in active], window)
    tightest: Decision | None = None
    for limit, count in zip(active, counts, strict=True):
        decision = Decision(limit.policy, limit.limit, max(0, limit.limit - count), reset)
        if count > limit.limit:
            raise RateLimited(limit.message, headers={"Retry-After": str(reset), **decision.headers()})
        if tightest is None or decision.remaining < tightest.remaining:
            tightest = decision
    return tightest


async def hit(redis: Redis, key: str, *, limit: int, message: str, policy: str = "default") -> None:
    """Count one request against one key (see `check`)."""
    await check(redis, [Limit(key, limit, policy, message)])


def address_limit(settings: Settings, address: str | None) -> Limit:
    """The per-client-address quota (off with the API's limits: `rate_limit_per_minute` 0)."""
    limit = settings.rate_limit_per_ip_per_minute if settings.rate_limit_per_minute > 0 else 0
    return Limit(
        f"loudou:rl:ip:{address or 'unknown'}",
        limit,
        "address",
        f"More than {limit} requests a minute from this address.",
    )
