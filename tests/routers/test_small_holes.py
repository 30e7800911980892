"""Low-severity holes: wildcards in `q`, intake keys in access logs."""

from __future__ import annotations

from app.observability import loggable_path
from tests.conftest import Org


async def test_q_wildcards_are_taken_literally(org: Org) -> None:
    for name in ("Ann 100% sure", "Bob"):
        r = await org.client.post(
            "/v1/leads", json={"email": f"{name[:3].lower()}@q.example", "name": name}, headers=org.auth()
        )
        assert r.status_code == 201, r.text
    for q, expected in (("%", ["Ann 100% sure"]), ("_", []), ("\\", []), ("b", ["Bob"])):
        r = await org.client.get("/v1/leads", params={"q": q}, headers=org.auth())
        assert r.status_code == 200, r.text
        assert sorted(lead["name"] for lead in r.json()["data"]) == expected, q


def test_intake_keys_never_reach_the_access_log() -> None:
    assert loggable_path("/v1/intake/forms/s3cr3tKey") == "/v1/intake/forms/***"
    assert loggable_path("/v1/intake/email/s3cr3tKey") == "/v1/intake/email/***"
    assert loggable_path("/v1/leads/123") == "/v1/leads/123"


async def test_references_to_unknown_or_foreign_leads_are_422(org: Org, other_org: Org) -> None:
    import uuid

    mine = (await org.client.post("/v1/leads", json={"email": "mine@ref.example"}, headers=org.auth())).json()
    foreign = (
        await other_org.client.post("/v1/leads", json={"email": "x@ref.example"}, headers=other_org.auth())
    ).json()
    for target in (foreign["id"], str(uuid.uuid4()), mine["id"]):
        r = await org.client.patch(
            f"/v1/leads/{mine['id']}", json={"possible_duplicate_of": target}, headers=org.auth()
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "possible_duplicate_of"
        r = await org.client.post("/v1/deals", json={"name": "d", "lead_id": target}, headers=org.auth())
        if target != mine["id"]:
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lead_id", r.text
