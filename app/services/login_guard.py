"""Brute-force guard for password login: per email and per client address, in Redis.

Each scope allows a few failures freely, then locks for an exponentially growing time (1 s, 2 s,
4 s … up to 15 min) after every further failure, and caps attempts per minute whatever their
outcome, so a burst of parallel guesses is refused before any password is hashed. A success
clears the email's failures. If Redis is down, logins go on (as the other limits do).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from app.errors import RateLimited

WINDOW_SECONDS = 900
MAX_LOCK_SECONDS = 900


@dataclass(frozen=True)
class Scope:
    """One thing logins are counted by: its name, free failures and attempts allowed per minute."""

    name: str
    free_failures: int
    attempts_per_minute: int


EMAIL = Scope("email", free_failures=5, attempts_per_minute=10)
ADDRESS = Scope("ip", free_failures=20, attempts_per_minute=60)


def _id(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LoginGuard:
    """The guard for one login request (its email and client address)."""

    redis: ArqRedis
    email: str
    address: str | None

    def _scopes(self) -> list[tuple[Scope, str]]:
        scopes = [(EMAIL, f"loudou:login:{EMAIL.name}:{_id(self.email)}")]
        if self.address:
            scopes.append((ADDRESS, f"loudou:login:{ADDRESS.name}:{_id(self.address)}"))
        return scopes

    async def check(self) -> None:
        """429 with Retry-After while a scope is locked or over its attempts a minute."""
        minute = int(time.time() // 60)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, key in self._scopes():
                    pipe.pttl(f"{key}:lock")
                    pipe.incr(f"{key}:tries:{minute}")
                    pipe.expire(f"{key}:tries:{minute}", 61)
                results = await pipe.execute()
        except (RedisError, OSError):
            return
        for index, (scope, _) in enumerate(self._scopes()):
            lock_ms, tries = int(results[3 * index]), int(results[3 * index + 1])
            if lock_ms > 0:
                raise RateLimited(
                    f"Too many failed logins for this {scope.name}; try again later.",
                    headers={"Retry-After": str(max(1, -(-lock_ms // 1000)))},
                )
            if tries > scope.attempts_per_minute:
                raise RateLimited(
                    f"More than {scope.attempts_per_minute} logins a minute for this {scope.name}.",
                    headers={"Retry-After": str(max(1, int(60 - time.time() % 60) + 1))},
                )

    async def failed(self) -> None:
        """Count a failure in every scope and lock those past their free failures."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, key in self._scopes():
                    pipe.incr(f"{key}:failures")
                    pipe.expire(f"{key}:failures", WINDOW_SECONDS)
                results = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for index, (scope, key) in enumerate(self._scopes()):
                    over = int(results[2 * index]) - scope.free_failures
                    if over >= 0:
                        pipe.set(f"{key}:lock", 1, ex=min(2 ** min(over, 20), MAX_LOCK_SECONDS))
                await pipe.execute()
        except (RedisError, OSError):
            return

    async def succeeded(self) -> None:
        """Forget the email's failures (the address keeps its count: it may be guessing many emails)."""
        try:
            scope_key = self._scopes()[0][1]
            await self.redis.delete(f"{scope_key}:failures", f"{scope_key}:lock")
        except (RedisError, OSError):
            return
