"""One rate limiter: a fixed one-minute window per key in Redis (INCR + EXPIRE in one round trip).

Used per credential (app.deps) and per intake source. If Redis is down, requests go through:
a limiter must not take the API down with it. Hand-written because it is two Redis commands on
the connection the app already holds; a library would add its own client and storage layer.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.errors import RateLimited


async def hit(redis: Redis, key: str, *, limit: int, message: str) -> None:
    """Count one request against `key` in the current minute; past `limit` a 429 with
    Retry-After (the seconds to the next window) saying `message`. No limit when `limit` <= 0."""
    if limit <= 0:
        return
    now = time.time()
    window_key = f"{key}:{int(now // 60)}"
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.incr(window_key)
            pipe.expire(window_key, 61)
            count, _ = await pipe.execute()
    except (RedisError, OSError):
        return
    if int(count) > limit:
        raise RateLimited(message, headers={"Retry-After": str(max(1, int(60 - (now % 60)) + 1))})
