"""One stack of real processes for every fault test (started once: initdb, migrations and three
servers take a while), each test in an organisation of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from app.config import Settings
from app.services.organisation import create_organisation
from app.state import AppState
from tests.faults.harness import Stack, start_stack


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    started = start_stack()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for counting rows (reconnect after a PostgreSQL restart)."""
    conn = await asyncpg.connect(stack.postgres.psql_url(stack.database))
    yield conn
    if not conn.is_closed():
        await conn.close()


@dataclass
class FaultOrg:
    """An organisation in the stack's database and an HTTP client on the served API."""

    id: str
    key: str
    http: httpx.AsyncClient
    reps: list[str] = field(default_factory=list)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        r = await self.http.post(path, json=body, headers=self.auth())
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        return dict(r.json())

    async def add_reps(self, count: int) -> list[str]:
        for _ in range(count):
            user = await self.post(
                "/v1/users", {"email": f"rep-{uuid.uuid4().hex[:8]}@example.com", "role": "rep"}
            )
            self.reps.append(str(user["id"]))
        await self.post("/v1/assignment-rules", {"name": "Round robin", "target_user_ids": self.reps})
        return self.reps


@pytest.fixture
async def fault_org(stack: Stack) -> AsyncIterator[FaultOrg]:
    settings = Settings(database_url=stack.database_url, redis_url=stack.redis.url, db_pool_size=1)
    state = AppState.open(settings)
    try:
        async with state.sessions() as session:
            created = await create_organisation(
                session,
                name=f"Faults {uuid.uuid4().hex[:6]}",
                admin_email=f"a-{uuid.uuid4().hex[:6]}@example.com",
            )
            await session.commit()
    finally:
        await state.close()
    await _api_settled(stack, created.api_key)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, limits=limits) as http:
        yield FaultOrg(id=str(created.org.id), key=created.api_key, http=http)


async def _api_settled(stack: Stack, key: str) -> None:
    """Each test starts on a settled API: after the PostgreSQL restart scenario, an API process
    that served none of its requests still holds pooled connections to the old server, and its
    first request finds one dead (answered 503, then the pool is renewed). Requests on new
    connections (spread over both processes) until twenty in a row answer."""
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30, limits=limits) as http:
        in_a_row = 0
        for _ in range(200):
            r = await http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
            in_a_row = in_a_row + 1 if r.status_code == 200 else 0
            if in_a_row >= 20:
                return
            if r.status_code != 200:
                await asyncio.sleep(0.2)
        raise AssertionError(f"the API did not settle: {r.status_code} {r.text}")


@dataclass
class Sent:
    """One request of a load: what was sent, the answer, when."""

    email: str
    at: float
    status: int | None = None
    lead_id: str | None = None
    seconds: float = 0.0
    body: Any = None


async def steady_load(
    http: httpx.AsyncClient, endpoint: str, *, rate: float, seconds: float, tag: str
) -> list[Sent]:
    """Post a web form `rate` times a second for `seconds`, one new email each, without waiting
    for answers before the next post (an open-loop load, as visitors arrive)."""
    sent: list[Sent] = []
    tasks = []
    start = time.monotonic()

    async def one(item: Sent) -> None:
        began = time.monotonic()
        try:
            r = await http.post(endpoint, json={"email": item.email, "name": "Load"})
            item.status = r.status_code
            item.body = r.json() if r.headers.get("content-type", "").endswith("json") else r.text
            if isinstance(item.body, dict):
                item.lead_id = item.body.get("lead_id")
        except httpx.HTTPError as exc:
            item.body = repr(exc)
        item.seconds = time.monotonic() - began

    count = int(rate * seconds)
    for i in range(count):
        target = start + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        item = Sent(email=f"{tag}-{i}@example.com", at=time.monotonic() - start)
        sent.append(item)
        tasks.append(asyncio.create_task(one(item)))
    await asyncio.gather(*tasks)
    return sent


REPORTS: list[str] = []


def report(name: str, **counts: Any) -> None:
    """The scenario's counts, on one line: printed (kept in the output on failure) and listed again
    in the run's summary, so every run, CI's included, shows them."""
    line = f"[{name}] " + " ".join(f"{k}={v}" for k, v in counts.items())
    REPORTS.append(line)
    print("\n" + line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("fault scenarios: counts")
        for line in REPORTS:
            terminalreporter.write_line(line)
