"""Acceptance 6, from outside: a manager reads no webhook secret and no other team's raw body;
nothing secret lands in the idempotency table."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select

from app.models.idempotency import IdempotencyRecord
from app.state import AppState
from tests.conftest import ADMIN_PASSWORD, Org


async def _team(org: Org, name: str) -> str:
    r = await org.client.post("/v1/teams", json={"name": name}, headers=org.auth())
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _webhook_source(org: Org, **fields: Any) -> dict[str, Any]:
    r = await org.client.post(
        "/v1/intake-sources", json={"kind": "webhook", "name": "hook", **fields}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    assert r.json()["secret"].startswith("whsec_")
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


async def test_a_manager_never_sees_a_webhook_source_secret(org: Org) -> None:
    team = await _team(org, "North")
    _, manager = await org.add_user("manager", team_id=team)
    source = await _webhook_source(org)
    listed = await org.client.get("/v1/intake-sources", headers=org.auth(manager))
    one = await org.client.get(f"/v1/intake-sources/{source['id']}", headers=org.auth(manager))
    admin_view = await org.client.get(f"/v1/intake-sources/{source['id']}", headers=org.auth())
    for r in (listed, one, admin_view):
        assert r.status_code == 200, r.text
        assert "whsec_" not in r.text and source["secret"] not in r.text
    assert one.json()["secret_set"] is True and "secret" not in one.json()
    rotated = await org.client.post(f"/v1/intake-sources/{source['id']}/rotate-secret", headers=org.auth())
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != source["secret"]


async def test_a_manager_reads_raw_bodies_only_of_leads_they_can_see(org: Org) -> None:
    north, south = await _team(org, "North"), await _team(org, "South")
    _, manager = await org.add_user("manager", team_id=north)
    north_rep, _ = await org.add_user("rep", team_id=north)
    south_rep, _ = await org.add_user("rep", team_id=south)
    ids = {}
    for name, owner in (("north", north_rep), ("south", south_rep)):
        r = await org.client.post(
            "/v1/intake-sources",
            json={"kind": "form", "name": name, "default_owner_id": owner},
            headers=org.auth(),
        )
        r = await org.client.post(r.json()["endpoint"], json={"email": f"{name}@lead.example", "note": name})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["inbound_event_id"]
        rejected = await org.client.post(r.request.url.path, json={"no": "contact"})
        assert rejected.status_code == 422
        ids[f"{name}-rejected"] = rejected.json()["inbound_event_id"]

    async def body_of(event_id: str, key: str | None) -> Any:
        r = await org.client.get(f"/v1/inbound-events/{event_id}?include_body=true", headers=org.auth(key))
        return r.status_code, r.json().get("body")

    status, body = await body_of(ids["north"], manager)
    assert status == 200 and "north@lead.example" in body
    assert (await body_of(ids["south"], manager))[0] == 403
    assert (await body_of(ids["south-rejected"], manager))[0] == 403
    assert (await body_of(ids["south"], None))[1] is not None  # admins read everything
    assert (await body_of(ids["south-rejected"], None))[1] is not None
    r = await org.client.get(f"/v1/inbound-events/{ids['south']}", headers=org.auth(manager))
    assert r.status_code == 200 and r.json()["body"] is None  # the metadata stays readable


async def test_nothing_secret_is_kept_in_the_idempotency_table(org: Org, state: AppState) -> None:
    me = (await org.client.get("/v1/me", headers=org.auth())).json()
    calls: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/v1/api-keys", {"name": "ci", "user_id": org.admin_id}, org.auth()),
        ("/v1/webhook-subscriptions", {"url": "https://receiver.example/h"}, org.auth()),
        ("/v1/intake-sources", {"kind": "webhook", "name": "w"}, org.auth()),
        ("/v1/auth/token", {"email": me["user"]["email"], "password": ADMIN_PASSWORD}, {}),
        ("/v1/users", {"email": f"u-{uuid.uuid4().hex[:6]}@example.com", "role": "rep"}, org.auth()),
    ]
    answers = []
    for path, body, headers in calls:
        key = f"idem-{uuid.uuid4().hex}"
        first = await org.client.post(path, json=body, headers={**headers, "Idempotency-Key": key})
        assert first.status_code in (200, 201), (path, first.text)
        answers.append(first)
    source = answers[2].json()
    hook = await org.client.post(
        source["endpoint"], json={"email": "x@y.example"}, headers={"Idempotency-Key": "public"}
    )
    assert hook.status_code == 401  # unsigned; and the key is ignored on public intake
    async with state.sessions() as session:
        rows = list(
            (await session.execute(select(IdempotencyRecord).execution_options(cross_tenant=True))).scalars()
        )
    mine = [r for r in rows if r.org_id == uuid.UUID(org.id) or r.path.startswith("/v1/intake/")]
    assert [r.path for r in mine] == ["/v1/users"]  # only the one answer without a secret
    for record in rows:
        stored = record.response_body or b""
        assert b"ldk_" not in stored and b"whsec_" not in stored and b"access_token" not in stored
        assert not record.path.startswith(("/v1/auth/", "/v1/intake/"))
    credential = f"Bearer {org.admin_key}"
    assert mine[0].caller_hash != hashlib.sha256(credential.encode()).hexdigest()
