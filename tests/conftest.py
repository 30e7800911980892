"""Test session: real PostgreSQL and Redis (DATABASE_URL/REDIS_URL, else embedded), migrations
from empty into a fresh database, one event loop, a fresh organisation per test."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.config import Settings, normalise_database_url
from app.main import create_app
from app.migrate import upgrade
from app.state import AppState


@dataclass
class Servers:
    """Where the test servers are: URLs, and the embedded handle if we started them."""

    database_url: str
    redis_url: str
    home: Path
    embedded: Any = None


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """DATABASE_URL/REDIS_URL when set (CI), else embedded servers started once for the session."""
    home = Path(tempfile.mkdtemp(prefix="loudou-test-"))
    db = os.environ.get("DATABASE_URL")
    redis = os.environ.get("REDIS_URL")
    handle = None
    if not db or not redis:
        from app import embedded

        handle = embedded.start(home, database=not db, redis=not redis)
        db = db or handle.database_url
        redis = redis or handle.redis_url
    assert db and redis
    try:
        yield Servers(database_url=normalise_database_url(db), redis_url=redis, home=home, embedded=handle)
    finally:
        if handle is not None:
            handle.stop()


def _asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_database(servers: Servers) -> AsyncIterator[str]:
    """A database of our own on the test server, built by running every migration from empty."""
    name = f"loudou_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_asyncpg_url(servers.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url)
        yield url
    finally:
        admin = await asyncpg.connect(_asyncpg_url(servers.database_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url(servers: Servers) -> AsyncIterator[str]:
    """The session's database (tests that run their own relay use fresh_database instead)."""
    async with fresh_database(servers) as url:
        yield url


@pytest.fixture(scope="session")
def settings(servers: Servers, database_url: str) -> Settings:
    """Settings pointing at the test database, with a queue of this session's own."""
    return Settings(
        database_url=database_url,
        redis_url=servers.redis_url,
        home=servers.home,
        secret_key="test-secret-key-" + "x" * 32,
        queue_name=f"loudou-test:{uuid.uuid4().hex[:8]}",
        rate_limit_per_minute=100_000,
        rate_limit_per_ip_per_minute=1_000_000,
        webhook_retry_schedule=[0.3, 0.3, 0.3],
        webhook_allow_private=True,
        db_pool_size=5,
        db_max_overflow=20,  # as before the no-overflow default: tests open many short sessions at once
    )


@pytest.fixture(scope="session")
async def state(settings: Settings) -> AsyncIterator[AppState]:
    """The resources the app and jobs share in tests."""
    state = AppState.open(settings)
    yield state
    await state.close()


@pytest.fixture(scope="session")
async def client(settings: Settings, state: AppState) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    app = create_app(settings, state=state)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@dataclass
class Org:
    """A fresh organisation with its admin's key, and helpers to add users of any role."""

    client: httpx.AsyncClient
    id: str
    admin_id: str
    admin_key: str
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, key: str | None = None) -> dict[str, str]:
        """Headers for a key (the admin's by default)."""
        return {"Authorization": f"Bearer {key or self.admin_key}"}

    async def add_user(self, role: str = "rep", **fields: Any) -> tuple[str, str]:
        """Create a user of `role` through the API and a key for them; returns (user_id, key)."""
        body = {"email": f"{role}-{uuid.uuid4().hex[:8]}@example.com", "role": role, **fields}
        r = await self.client.post("/v1/users", json=body, headers=self.auth())
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        r = await self.client.post(
            "/v1/api-keys", json={"name": "test", "user_id": user_id}, headers=self.auth()
        )
        assert r.status_code == 201, r.text
        return user_id, r.json()["key"]


ADMIN_PASSWORD = "correct horse battery"


async def make_org(state: AppState, client: httpx.AsyncClient) -> Org:
    """Create an organisation with an admin (password ADMIN_PASSWORD) and the admin's key."""
    from app.services.organisation import create_organisation

    async with state.sessions() as session:
        created = await create_organisation(
            session,
            name=f"Org {uuid.uuid4().hex[:6]}",
            admin_email=f"admin-{uuid.uuid4().hex[:6]}@example.com",
            admin_password=ADMIN_PASSWORD,
        )
        await session.commit()
    return Org(
        client=client,
        id=str(created.org.id),
        admin_id=str(created.admin.id),
        admin_key=created.api_key,
    )


@pytest.fixture
async def org(state: AppState, client: httpx.AsyncClient) -> Org:
    """A fresh organisation per test, so no test sees another's rows."""
    return await make_org(state, client)


@pytest.fixture
async def other_org(state: AppState, client: httpx.AsyncClient) -> Org:
    """A second organisation, for isolation tests."""
    return await make_org(state, client)


@pytest.fixture(scope="session")
async def worker(settings: Settings) -> AsyncIterator[None]:
    """An arq worker with the outbox relay, running in the test loop for the whole session."""
    from app.workers.runner import run_worker

    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    yield
    stop.set()
    await asyncio.wait_for(task, timeout=15)


async def wait_for(predicate: Any, *, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy, or fail after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
