"""Cross-cutting HTTP conventions: idempotency, body limits, content types, rate limits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from app.config import Settings
from app.main import create_app
from app.models.user import User
from app.state import AppState
from tests.conftest import Org, make_org


async def _count_users(state: AppState, org: Org, email: str) -> int:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        return int(
            (
                await session.execute(select(func.count()).select_from(User).where(col(User.email) == email))
            ).scalar_one()
        )


async def test_same_idempotency_key_and_body_creates_one_row_and_same_answer(
    org: Org, state: AppState
) -> None:
    headers = {**org.auth(), "Idempotency-Key": "create-user-1"}
    body = {"email": "idem@example.com", "name": "Once"}
    first = await org.client.post("/v1/users", json=body, headers=headers)
    second = await org.client.post("/v1/users", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _count_users(state, org, "idem@example.com") == 1


async def test_same_key_with_another_body_is_422(org: Org, state: AppState) -> None:
    headers = {**org.auth(), "Idempotency-Key": "create-user-2"}
    assert (
        await org.client.post("/v1/users", json={"email": "a@example.com"}, headers=headers)
    ).status_code == 201
    r = await org.client.post("/v1/users", json={"email": "b@example.com"}, headers=headers)
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_key_reused"
    assert await _count_users(state, org, "b@example.com") == 0


async def test_concurrent_requests_with_one_key_create_one_row(org: Org, state: AppState) -> None:
    headers = {**org.auth(), "Idempotency-Key": "race"}
    body = {"email": "race@example.com"}
    results = await asyncio.gather(
        *[org.client.post("/v1/users", json=body, headers=headers) for _ in range(5)]
    )
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    assert await _count_users(state, org, "race@example.com") == 1


async def test_failed_request_does_not_burn_the_key(org: Org) -> None:
    headers = {**org.auth(), "Idempotency-Key": "fix-and-retry"}
    bad = await org.client.post("/v1/users", json={"email": "nope"}, headers=headers)
    assert bad.status_code == 422
    good = await org.client.post("/v1/users", json={"email": "fixed@example.com"}, headers=headers)
    # The body differs from the failed attempt, and that attempt was not kept.
    assert good.status_code == 201


async def test_keys_are_per_caller(org: Org, other_org: Org) -> None:
    body = {"email": "shared-key@example.com"}
    r1 = await org.client.post("/v1/users", json=body, headers={**org.auth(), "Idempotency-Key": "k"})
    r2 = await org.client.post("/v1/users", json=body, headers={**other_org.auth(), "Idempotency-Key": "k"})
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["org_id"] == org.id and r2.json()["org_id"] == other_org.id


async def test_body_over_one_mib_is_413(org: Org) -> None:
    big = {"email": "big@example.com", "name": "x" * (2 * 1024 * 1024)}
    r = await org.client.post("/v1/users", json=big, headers=org.auth())
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"


async def test_streamed_body_over_the_limit_is_413(org: Org) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 65536

    r = await org.client.post(
        "/v1/users", content=chunks(), headers={**org.auth(), "Content-Type": "application/json"}
    )
    assert r.status_code == 413


async def test_non_json_body_is_415(org: Org) -> None:
    r = await org.client.post(
        "/v1/users", content=b"email=a@example.com", headers={**org.auth(), "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    assert r.json()["code"] == "unsupported_media_type"


async def test_malformed_json_is_400(org: Org) -> None:
    r = await org.client.post(
        "/v1/users", content=b'{"email": ', headers={**org.auth(), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "malformed_json"


async def test_wrong_types_are_422_not_500(org: Org) -> None:
    r = await org.client.post("/v1/users", json={"email": ["a"], "capacity": "many"}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post("/v1/users", json=["not", "an", "object"], headers=org.auth())
    assert r.status_code == 422
    # A path id is routed only when it is a UUID (as the document says): anything else names no
    # resource, so 404 (and a method the path does not serve is a 405, not a 422 about the id).
    r = await org.client.get("/v1/users/not-a-uuid", headers=org.auth())
    assert r.status_code == 404


async def test_sql_and_html_are_stored_verbatim(org: Org) -> None:
    name = "Robert'); DROP TABLE users;-- <script>alert(1)</script>"
    r = await org.client.post(
        "/v1/users", json={"email": "bobby@example.com", "name": name}, headers=org.auth()
    )
    assert r.status_code == 201
    got = await org.client.get(f"/v1/users/{r.json()['id']}", headers=org.auth())
    assert got.json()["name"] == name


async def test_rate_limit_answers_429_with_retry_after(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_per_minute": 3})
    state = AppState.open(limited)
    try:
        app = create_app(limited, state=state)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            org = await make_org(state, client)
            statuses = [(await client.get("/v1/me", headers=org.auth())).status_code for _ in range(5)]
            assert statuses[:3] == [200, 200, 200]
            r = await client.get("/v1/me", headers=org.auth())
            assert r.status_code == 429
            assert r.json()["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 61
    finally:
        await state.close()


async def test_values_postgres_cannot_store_are_422_not_500(org: Org) -> None:
    r = await org.client.post(
        "/v1/users", json={"email": "nul@example.com", "name": "a\u0000b"}, headers=org.auth()
    )
    assert r.status_code == 422 and r.json()["code"] == "unstorable_value"
    r = await org.client.post(
        "/v1/webhook-subscriptions",
        json={"url": "https://hooks.example/x", "filter": {"k\u0000": 1}},
        headers=org.auth(),
    )
    assert r.status_code == 422
    r = await org.client.post(
        "/v1/deals", json={"name": "Huge", "amount": "68489724408115830"}, headers=org.auth()
    )
    assert r.status_code == 422
    listed = (await org.client.get("/v1/users?q=nul@", headers=org.auth())).json()
    assert listed["data"] == []
