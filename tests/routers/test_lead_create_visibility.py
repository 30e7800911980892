"""Creating a lead must never read or change a lead the caller cannot see (OWASP API1)."""

from __future__ import annotations

from tests.conftest import Org
from tests.factories import make_lead


async def test_a_rep_posting_another_reps_lead_email_gets_409_and_learns_nothing(org: Org) -> None:
    _, alice = await org.add_user("rep")
    _, mallory = await org.add_user("rep")
    theirs = await make_lead(
        org, alice, email="ceo@bigco.example", phone="+1 415 555 0199", name="Big Co CEO", company="BigCo"
    )
    before = (await org.client.get(f"/v1/leads/{theirs['id']}", headers=org.auth())).json()
    for probe in ({"email": "CEO@bigco.example", "title": "mallory"}, {"phone": "(415) 555-0199"}):
        r = await org.client.post("/v1/leads", json=probe, headers=org.auth(mallory))
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["code"] == "duplicate_exists"
        text = r.text
        assert theirs["id"] not in text and "BigCo" not in text and "Big Co CEO" not in text
        assert "location" not in r.headers
    after = (await org.client.get(f"/v1/leads/{theirs['id']}", headers=org.auth())).json()
    assert after == before  # untouched: same version, no title filled, touch count unchanged
    listed = await org.client.get("/v1/leads", headers=org.auth(mallory))
    assert listed.json()["data"] == []


async def test_a_rep_still_merges_into_their_own_or_a_pooled_lead(org: Org) -> None:
    _, rep = await org.add_user("rep")
    own = await make_lead(org, rep, email="mine@acme.example")
    pooled = await make_lead(org, email="pool@acme.example")
    for lead in (own, pooled):
        r = await org.client.post(
            "/v1/leads", json={"email": lead["email"], "title": "CFO"}, headers=org.auth(rep)
        )
        assert r.status_code == 200, r.text
        assert r.json()["id"] == lead["id"] and r.json()["title"] == "CFO"


async def test_an_admin_still_merges_into_any_lead(org: Org) -> None:
    _, rep = await org.add_user("rep")
    theirs = await make_lead(org, rep, email="x@acme.example")
    r = await org.client.post("/v1/leads", json={"email": "x@acme.example"}, headers=org.auth())
    assert r.status_code == 200 and r.json()["id"] == theirs["id"]
