"""Rate limits: per credential, per client address and per intake source, counted in Redis
(shared by every process), counted locally while Redis is down, advertised with the IETF draft
RateLimit headers. (Across two real API processes: tests/faults/test_rate_limit_processes.py.)"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.connections import ArqRedis

from app import ratelimit
from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import Org, make_org
from tests.factories import make_source

POLICY = re.compile(r'^"(credential|address|source)";q=(\d+);w=60$')
STANDING = re.compile(r'^"(credential|address|source)";r=(\d+);t=(\d+)$')


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[tuple[AppState, httpx.AsyncClient]]:
    """An app with small limits: 4 a minute per credential, 6 per address."""
    # The windows are fixed minutes: start with a few seconds of this one left, so that a test's
    # requests never straddle two windows (the count starts again in the next one: a CI run once
    # saw the sixth request of a minute answered 200).
    left = ratelimit.WINDOW_SECONDS - time.time() % ratelimit.WINDOW_SECONDS
    if left < 5:
        await asyncio.sleep(left + 0.05)
    own = settings.model_copy(update={"rate_limit_per_minute": 4, "rate_limit_per_ip_per_minute": 6})
    state = AppState.open(own)
    app = create_app(own, state=state)
    # A client address of this test's own, so the per-address window is fresh.
    transport = httpx.ASGITransport(app=app, client=(f"10.9.{id(state) % 250}.{id(app) % 250}", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield state, client
    await state.close()


async def test_answers_carry_the_ratelimit_headers(limited: tuple[AppState, httpx.AsyncClient]) -> None:
    state, client = limited
    org = await make_org(state, client)
    r = await client.get("/v1/me", headers=org.auth())
    assert r.status_code == 200
    policy = POLICY.match(r.headers["ratelimit-policy"])
    standing = STANDING.match(r.headers["ratelimit"])
    assert policy and standing
    # The tighter quota is shown: the credential's 4 (3 left) rather than the address's 6 (5 left).
    assert policy.groups() == ("credential", "4") and standing.group(2) == "3"
    assert 1 <= int(standing.group(3)) <= 61


async def test_the_credential_limit_is_a_429_with_retry_after(
    limited: tuple[AppState, httpx.AsyncClient],
) -> None:
    state, client = limited
    org = await make_org(state, client)
    for _ in range(5):
        await client.get("/v1/me", headers=org.auth())
    r = await client.get("/v1/me", headers=org.auth())
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert r.headers["content-type"] == "application/problem+json"
    assert 1 <= int(r.headers["retry-after"]) <= 61
    assert r.headers["ratelimit"].startswith('"credential";r=0;')


async def test_the_address_limit_holds_across_credentials(
    limited: tuple[AppState, httpx.AsyncClient],
) -> None:
    state, client = limited
    org = await make_org(state, client)
    _, rep_key = await org.add_user("rep")  # two calls (users, api-keys) from this address
    _, other_key = await org.add_user("rep")  # two more
    answers = [await client.get("/v1/me", headers=org.auth(key)) for key in (rep_key, other_key) * 3]
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert "from this address" in refused[0].json()["detail"]
    assert refused[0].headers["ratelimit-policy"] == '"address";q=6;w=60'


async def test_a_bad_key_counts_against_the_address(limited: tuple[AppState, httpx.AsyncClient]) -> None:
    _, client = limited
    answers = [
        (await client.get("/v1/me", headers={"Authorization": f"Bearer guess-{i}"})).status_code
        for i in range(8)
    ]
    assert answers[0] == 401 and answers[-1] == 429, answers


async def test_intake_source_limit_with_headers(org: Org) -> None:
    source = await make_source(org, "form", rate_limit_per_minute=3)
    answers = [
        await org.client.post(source["endpoint"], json={"email": f"rl{i}@example.com"}) for i in range(5)
    ]
    assert answers[0].status_code == 201
    assert answers[0].headers["ratelimit-policy"] == '"source";q=3;w=60'
    assert STANDING.match(answers[0].headers["ratelimit"])
    assert answers[-1].status_code == 429 and int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].json()["code"] == "rate_limited"


async def test_without_redis_the_limit_is_counted_in_the_process(
    limited: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, client = limited
    org = await make_org(state, client)
    dead = ArqRedis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    monkeypatch.setattr(state, "redis", dead)
    try:
        answers = [(await client.get("/v1/me", headers=org.auth())).status_code for _ in range(6)]
    finally:
        await dead.aclose()
    assert 200 in answers and answers[-1] == 429, answers
    assert ratelimit.local_windows().redis_retry_at > 0  # Redis is left alone for a second


async def test_limits_of_zero_are_off(settings: Settings) -> None:
    state = AppState.open(settings)
    try:
        limits = [ratelimit.Limit("loudou:rl:test-off", 0, "credential", "x")]
        assert await ratelimit.check(state.redis, limits) is None
    finally:
        await state.close()
