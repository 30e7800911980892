"""1,000 form posts from one source in 10 s against `loudou serve --workers 2`: the source's
limit holds across both API processes (counted in Redis), every post past it is a 429 with
Retry-After and the RateLimit headers, and every accepted post is stored."""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import httpx
import psutil
import pytest

from tests.faults.conftest import FaultOrg, report
from tests.faults.harness import Stack

pytestmark = pytest.mark.slow

POSTS = 1000
LIMIT = 150


async def test_source_limit_holds_across_two_api_processes(stack: Stack, fault_org: FaultOrg) -> None:
    source = await fault_org.post(
        "/v1/intake-sources", {"kind": "form", "name": "Flood", "rate_limit_per_minute": LIMIT}
    )
    # Wait for the start of a fresh minute window if this one is about to end, so all 1,000 fall
    # into one window (the limit is per minute).
    if time.time() % 60 > 45:
        await asyncio.sleep(60 - time.time() % 60 + 0.5)
    # A new connection per post (paced posts would otherwise reuse one or two kept-alive
    # connections, held by whichever process accepted them): the kernel hands them to both of
    # uvicorn's processes.
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    assert stack.api is not None
    api_processes = psutil.Process(stack.api.pid).children()
    assert len(api_processes) >= 2  # uvicorn's two workers (plus its multiprocessing helper)
    cpu_before = {p.pid: sum(p.cpu_times()[:2]) for p in api_processes}
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(
        base_url=stack.base_url, timeout=httpx.Timeout(60, pool=None), limits=limits
    ) as http:
        start = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(i * 10 / POSTS)
            answers.append(await http.post(source["endpoint"], json={"email": f"flood-{i}@example.com"}))

        await asyncio.gather(*[one(i) for i in range(POSTS)])
        seconds = time.monotonic() - start
    cpu_used = sorted(sum(p.cpu_times()[:2]) - cpu_before[p.pid] for p in api_processes)
    accepted = [r for r in answers if r.status_code == 201]
    limited = [r for r in answers if r.status_code == 429]
    conn = await asyncpg.connect(stack.postgres.psql_url(stack.database))
    try:
        stored = await conn.fetchval("SELECT count(*) FROM leads WHERE org_id = $1", fault_org.id)
    finally:
        await conn.close()
    report(
        "rate limit, 2 API processes",
        sent=POSTS,
        seconds=round(seconds, 1),
        accepted=len(accepted),
        limited_429=len(limited),
        other=len(answers) - len(accepted) - len(limited),
        stored=stored,
        limit=LIMIT,
        api_cpu_s=[round(c, 1) for c in cpu_used],
    )
    # Both API processes answered a share (each burned CPU on it), yet one limit held.
    assert cpu_used[-2] > 0.1, cpu_used
    assert len(answers) == POSTS and len(accepted) + len(limited) == POSTS
    # One window (or two, if the posts straddled a minute): never more than the limit per window.
    assert LIMIT <= len(accepted) <= 2 * LIMIT
    if time.time() % 60 > seconds + 1:
        assert len(accepted) == LIMIT
    assert stored == len(accepted)
    for r in limited[:50]:
        assert 1 <= int(r.headers["retry-after"]) <= 61
        assert r.headers["ratelimit-policy"] == f'"source";q={LIMIT};w=60'
        assert re.fullmatch(r'"source";r=0;t=\d+', r.headers["ratelimit"])
        assert r.json()["code"] == "rate_limited"
    assert re.fullmatch(r'"source";r=\d+;t=\d+', accepted[0].headers["ratelimit"])
