"""Database timeouts: every pooled connection carries statement, lock and idle-in-transaction
timeouts, and a lock wait past its limit answers 503 with Retry-After, not a hung request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select, text

from app.config import Settings
from app.main import create_app
from app.models.lead import Lead
from app.state import AppState
from tests.conftest import Org


async def test_every_connection_has_the_timeouts(state: AppState, settings: Settings) -> None:
    async with state.sessions() as session:
        shown = [
            (await session.execute(text(f"SHOW {name}"))).scalar_one()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        ]
    expected = [
        settings.db_statement_timeout_ms,
        settings.db_lock_timeout_ms,
        settings.db_idle_in_transaction_timeout_ms,
    ]
    assert [_ms(v) for v in shown] == expected


def _ms(value: str) -> int:
    units = {"ms": 1, "s": 1000, "min": 60_000}
    for unit in ("ms", "min", "s"):
        if value.endswith(unit):
            return int(value[: -len(unit)]) * units[unit]
    return int(value)


@pytest.fixture
async def impatient(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose connections give up on a lock after 200 ms."""
    quick = settings.model_copy(update={"db_lock_timeout_ms": 200})
    state = AppState.open(quick)
    try:
        transport = httpx.ASGITransport(app=create_app(quick, state=state))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await state.close()


async def test_a_lock_wait_past_the_limit_is_503(
    org: Org, state: AppState, impatient: httpx.AsyncClient
) -> None:
    r = await org.client.post("/v1/leads", json={"email": "locked@lead.example"}, headers=org.auth())
    lead_id = uuid.UUID(r.json()["id"])
    async with state.sessions() as holder:
        holder.info["org_id"] = uuid.UUID(org.id)
        await holder.execute(select(Lead).where(Lead.id == lead_id).with_for_update())  # type: ignore[arg-type]
        r = await impatient.patch(f"/v1/leads/{lead_id}", json={"title": "x"}, headers=org.auth())
        await holder.rollback()
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1" and r.json()["code"] == "database_busy"
    r = await impatient.patch(f"/v1/leads/{lead_id}", json={"title": "x"}, headers=org.auth())
    assert r.status_code == 200, r.text


async def test_no_connection_is_held_while_an_intake_body_trickles_in(org: Org, state: AppState) -> None:
    import asyncio

    source = (
        await org.client.post("/v1/intake-sources", json={"kind": "form", "name": "slow"}, headers=org.auth())
    ).json()
    gate = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"email": "slow@lead.example",'
        await gate.wait()
        yield b' "name": "Slow"}'

    post = asyncio.create_task(
        org.client.post(source["endpoint"], content=slow_body(), headers={"content-type": "application/json"})
    )
    await asyncio.sleep(0.3)
    pool = state.engine.pool
    held = pool.checkedout()  # type: ignore[attr-defined]
    gate.set()
    r = await post
    assert r.status_code == 201, r.text
    assert held == 0
