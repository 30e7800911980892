"""Acceptance 4, from outside: password guessing is throttled per email and per address, and
the Argon2 work never stalls the API's other requests."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import ADMIN_PASSWORD, Org


@pytest.fixture
async def from_address(settings: Settings, state: AppState) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling from an address of its own, so its failures lock nobody else."""
    address = f"2001:db8::{random.getrandbits(16):x}:{random.getrandbits(16):x}"
    transport = httpx.ASGITransport(app=create_app(settings, state=state), client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def _admin_email(org: Org) -> str:
    r = await org.client.get("/v1/me", headers=org.auth())
    return str(r.json()["user"]["email"])


async def test_twenty_wrong_passwords_for_one_email_get_429_and_the_api_stays_fast(
    org: Org, from_address: httpx.AsyncClient
) -> None:
    email = await _admin_email(org)
    latencies: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            assert (await org.client.get("/v1/me", headers=org.auth())).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    async def guess() -> list[httpx.Response]:
        try:
            return [
                await from_address.post("/v1/auth/token", json={"email": email, "password": f"guess-{i}"})
                for i in range(20)
            ]
        finally:
            done.set()

    _, answers = await asyncio.gather(probe(), guess())
    codes = [r.status_code for r in answers]
    assert set(codes) <= {401, 429}
    assert codes[:5] == [401] * 5  # a few honest typos are free
    assert codes.count(429) >= 10
    limited = next(r for r in answers if r.status_code == 429)
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) >= 1
    # Locked out means locked out: even the right password waits (API keys keep working).
    r = await from_address.post("/v1/auth/token", json={"email": email, "password": ADMIN_PASSWORD})
    assert r.status_code == 429
    assert max(latencies) < 0.5, max(latencies)


async def test_parallel_guesses_are_refused_before_hashing(org: Org, from_address: httpx.AsyncClient) -> None:
    email = await _admin_email(org)
    answers = await asyncio.gather(
        *(from_address.post("/v1/auth/token", json={"email": email, "password": f"p{i}"}) for i in range(30))
    )
    assert sum(r.status_code == 429 for r in answers) >= 20


async def test_one_address_guessing_many_emails_is_throttled(from_address: httpx.AsyncClient) -> None:
    codes = [
        (
            await from_address.post(
                "/v1/auth/token", json={"email": f"nobody-{i}@example.com", "password": "x"}
            )
        ).status_code
        for i in range(25)
    ]
    assert codes[:20] == [401] * 20 and codes[-1] == 429


async def test_a_success_clears_the_email_s_failures(org: Org, from_address: httpx.AsyncClient) -> None:
    email = await _admin_email(org)
    for _ in range(4):
        r = await from_address.post("/v1/auth/token", json={"email": email, "password": "wrong"})
        assert r.status_code == 401
    r = await from_address.post("/v1/auth/token", json={"email": email, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    for _ in range(4):
        r = await from_address.post("/v1/auth/token", json={"email": email, "password": "wrong"})
        assert r.status_code == 401  # counting starts again
