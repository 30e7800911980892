"""Intake keeps working and loses nothing: Redis down, concurrent duplicates, failures mid-way."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import event

from app.config import Settings
from app.db import DriverStatements
from app.main import create_app
from app.services.intake import service as intake_service
from app.state import AppState
from tests.asgi import raw_post
from tests.conftest import Org
from tests.factories import make_source


async def warm_form(org: Org) -> dict[str, Any]:
    """A form whose source, settings and scoring rules this process has cached (by one post), so
    the next new lead takes the direct one-statement write: a cache miss reads through the
    request's session, which then has a transaction and writes through it instead."""
    source = await make_source(org, "form")
    r = await org.client.post(source["endpoint"], json={"email": "warm-up@example.com"})
    assert r.status_code == 201
    return source


async def test_intake_answers_when_redis_is_down(
    org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Redis every post under the limit is stored (2xx); the source's limit is then
    counted in this process, so a flood is still refused."""
    source = await make_source(org, "form", rate_limit_per_minute=5)
    dead = ArqRedis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    monkeypatch.setattr(state, "redis", dead)
    try:
        statuses = []
        for i in range(7):
            r = await org.client.post(source["endpoint"], json={"email": f"down{i}@example.com"})
            statuses.append(r.status_code)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    finally:
        await dead.aclose()
    # One window may end between two posts (a fresh count of 5): at least five stored, none lost.
    created = statuses.count(201)
    assert created >= 5 and statuses.count(429) == 7 - created, statuses
    leads = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    assert len(leads) == created


async def test_simultaneous_posts_of_one_address_make_one_lead(org: Org) -> None:
    source = await make_source(org, "form")
    results = await asyncio.gather(
        *[org.client.post(source["endpoint"], json={"email": "Same@Example.com"}) for _ in range(6)]
    )
    assert sorted(r.status_code for r in results) == [200] * 5 + [201]
    assert len({r.json()["lead_id"] for r in results}) == 1
    lead = (await org.client.get(f"/v1/leads/{results[0].json()['lead_id']}", headers=org.auth())).json()
    assert lead["touch_count"] == 6


@pytest.mark.parametrize("form", [{}, {"name": "Busy Bee", "company": "Hive Ltd"}], ids=["bare", "full"])
async def test_simultaneous_merges_into_one_lead_lose_no_touch(org: Org, form: dict[str, str]) -> None:
    """Merges into a known lead run without locks first (`merge_direct`, guarded by the row's
    version); one that finds the lead changed under it merges again under the locks. Twelve at
    once: every touch counted and recorded, every field filled by somebody kept. A full form
    (name and company) finds the lead by its candidates look-up, a bare one by its insert."""
    source = await make_source(org, "form")
    first = await org.client.post(source["endpoint"], json={"email": "busy@example.com", **form})
    assert first.status_code == 201
    results = await asyncio.gather(
        *[
            org.client.post(
                source["endpoint"], json={"email": "busy@example.com", f"field_{i}": str(i), **form}
            )
            for i in range(12)
        ]
    )
    assert [r.status_code for r in results] == [200] * 12
    assert {r.json()["lead_id"] for r in results} == {first.json()["lead_id"]}
    lead_id = first.json()["lead_id"]
    lead = (await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
    assert lead["touch_count"] == 13 and lead["version"] == 13
    assert lead["attributes"] == {f"field_{i}": str(i) for i in range(12)}
    touches = (await org.client.get(f"/v1/leads/{lead_id}/activities", headers=org.auth())).json()["data"]
    assert len(touches) == 13
    assert {t["id"] for t in touches} >= {r.json()["activity_id"] for r in results}


async def test_a_failure_while_making_the_lead_keeps_the_event_for_replay(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await make_source(org, "form")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database hiccup")

    # Both ways of making the lead: the fast path (caches warm) and the session path.
    monkeypatch.setattr(intake_service, "ingest", broken)
    monkeypatch.setattr(intake_service, "ingest_direct", broken)
    r = await org.client.post(source["endpoint"], json={"email": "kept@example.com"})
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    event_id = r.json()["inbound_event_id"]
    event = (await org.client.get(f"/v1/inbound-events/{event_id}", headers=org.auth())).json()
    assert event["status"] == "rejected" and "RuntimeError" in event["reason"]
    monkeypatch.undo()
    r = await org.client.post(f"/v1/inbound-events/{event_id}/replay", headers=org.auth())
    assert r.status_code == 200 and r.json()["status"] == "created"
    lead = (await org.client.get(f"/v1/leads/{r.json()['lead_id']}", headers=org.auth())).json()
    assert lead["email"] == "kept@example.com"


async def test_a_value_postgres_cannot_store_is_a_422_and_the_event_is_kept(org: Org) -> None:
    """The new-lead write fails inside its own transaction (a NUL byte in text): nothing of the
    lead is left, the event is kept as rejected with the reason, and the answer is a 422."""
    source = await warm_form(org)
    r = await org.client.post(
        source["endpoint"], json={"email": "nul@example.com", "name": "Ada", "message": "hello\u0000world"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unstorable_value"
    event = (
        await org.client.get(f"/v1/inbound-events/{r.json()['inbound_event_id']}", headers=org.auth())
    ).json()
    assert event["status"] == "rejected" and event["lead_id"] is None
    assert "cannot be stored" in event["reason"]
    leads = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    assert [lead["email"] for lead in leads] == ["warm-up@example.com"]
    # The same address with a storable message afterwards is a new lead: no lock or row was left.
    r = await org.client.post(source["endpoint"], json={"email": "nul@example.com", "message": "hello"})
    assert r.status_code == 201 and r.json()["status"] == "created"


async def test_a_known_address_after_a_direct_write_merges_into_that_lead(org: Org) -> None:
    """The first post is written directly; the second finds the lead and merges into it
    (`merge_direct`, also without the session)."""
    source = await warm_form(org)
    first = await org.client.post(source["endpoint"], json={"email": "twice@example.com"})
    second = await org.client.post(
        source["endpoint"], json={"email": "twice@example.com", "name": "Ada Lovelace", "company": "Engines"}
    )
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["lead_id"] == first.json()["lead_id"] and second.json()["status"] == "merged"
    lead = (await org.client.get(f"/v1/leads/{first.json()['lead_id']}", headers=org.auth())).json()
    assert (lead["touch_count"], lead["name"], lead["company"]) == (2, "Ada Lovelace", "Engines")
    activities = (await org.client.get(f"/v1/leads/{lead['id']}/activities", headers=org.auth())).json()[
        "data"
    ]
    assert len(activities) == 2


async def test_a_form_lead_like_an_open_one_by_name_and_company_is_flagged(org: Org) -> None:
    """The fuzzy look-up runs on the direct path too, and a wildcard-only company flags nothing."""
    source = await warm_form(org)
    first = await org.client.post(
        source["endpoint"],
        json={"email": "jon@acme.example", "name": "Jonathan Smith", "company": "Acme Corp"},
    )
    second = await org.client.post(
        source["endpoint"],
        json={"email": "j.smith@acme.example", "name": "Jonathan Smyth", "company": "ACME Corp"},
    )
    third = await org.client.post(
        source["endpoint"], json={"email": "pct@example.com", "name": "J", "company": "%%%"}
    )
    assert [r.status_code for r in (first, second, third)] == [201, 201, 201]
    assert second.json()["possible_duplicate_of"] == first.json()["lead_id"]
    assert third.json()["possible_duplicate_of"] is None
    lead = (await org.client.get(f"/v1/leads/{second.json()['lead_id']}", headers=org.auth())).json()
    assert lead["possible_duplicate_of"] == first.json()["lead_id"]


async def test_a_connection_lost_during_the_direct_write_is_not_reused(
    org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is dropped from the pool (not handed to the next request), the event is
    kept for replay, and the next post makes its lead."""
    source = await warm_form(org)
    invalidated: list[BaseException | None] = []

    def on_invalidate(dbapi_connection: Any, record: Any, exc: BaseException | None) -> None:
        invalidated.append(exc)

    async def lost(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("connection lost")

    event.listen(state.engine.sync_engine.pool, "invalidate", on_invalidate)
    try:
        monkeypatch.setattr(DriverStatements, "fetchval", lost)
        r = await org.client.post(source["endpoint"], json={"email": "lost@example.com"})
        # A lost connection is the database out of reach: 503 (retry), not a 500.
        assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
        assert r.json()["inbound_event_id"] and r.headers["retry-after"] == "2"
        assert [type(e) for e in invalidated] == [ConnectionResetError]
        monkeypatch.undo()
        kept = (
            await org.client.get(f"/v1/inbound-events/{r.json()['inbound_event_id']}", headers=org.auth())
        ).json()
        assert kept["status"] == "rejected" and "database" in kept["reason"]
        r = await org.client.post(source["endpoint"], json={"email": "lost@example.com"})
        assert r.status_code == 201 and r.json()["status"] == "created"
    finally:
        event.remove(state.engine.sync_engine.pool, "invalidate", on_invalidate)


async def test_a_client_gone_before_its_body_arrived_is_no_crash(
    org: Org, settings: Settings, state: AppState
) -> None:
    """wrk stopping mid-post, a closed tab: half a body, then the disconnect. Nothing whole
    arrived, so nothing is stored, and it is a 499 in the log, not a 500 with a traceback."""
    source = await make_source(org, "form")
    app = create_app(settings, state=state)
    path = httpx.URL(source["endpoint"]).path
    messages = [{"type": "http.request", "body": b'{"email": "gone@', "more_body": True}]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"40")]
    sent = await raw_post(app, path, headers, messages)  # a crash would be re-raised here by Starlette
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [499]
    events = await org.client.get(f"/v1/inbound-events?source_id={source['id']}", headers=org.auth())
    assert events.status_code == 200 and events.json()["data"] == []


async def test_a_merge_postgres_cannot_store_is_a_422_and_leaves_the_lead_as_it_was(org: Org) -> None:
    """A post to a known address carrying a NUL byte is refused by the statement that would
    insert it or find the open lead (it reads the rows first), before any merge: the lead keeps
    its fields, count and version, no touch is added, the event is kept as rejected (422), and the
    next post merges as usual."""
    source = await warm_form(org)
    first = await org.client.post(source["endpoint"], json={"email": "known@example.com", "name": "Ada"})
    assert first.status_code == 201
    r = await org.client.post(
        source["endpoint"],
        json={"email": "known@example.com", "company": "Engines", "message": "hello\u0000world"},
    )
    assert r.status_code == 422 and r.json()["code"] == "unstorable_value", r.text
    event = (
        await org.client.get(f"/v1/inbound-events/{r.json()['inbound_event_id']}", headers=org.auth())
    ).json()
    assert event["status"] == "rejected" and event["lead_id"] is None
    lead_id = first.json()["lead_id"]
    lead = (await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
    assert (lead["company"], lead["touch_count"], lead["version"]) == (None, 1, 1)
    touches = (await org.client.get(f"/v1/leads/{lead_id}/activities", headers=org.auth())).json()["data"]
    assert len(touches) == 1
    r = await org.client.post(source["endpoint"], json={"email": "known@example.com", "company": "Engines"})
    assert r.status_code == 200 and r.json()["status"] == "merged" and r.json()["lead_id"] == lead_id
