"""Leads API: create/dedupe, list filters and paging, update, delete, assignment, pool, timeline."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select
from sqlmodel import col

from app.db import tenant_session
from app.models.audit import AuditEntry
from app.models.outbox import OutboxEvent
from app.state import AppState
from tests.conftest import Org
from tests.factories import make_lead


async def test_create_normalises_email_and_phone_and_emits_lead_created(org: Org, state: AppState) -> None:
    r = await org.client.post(
        "/v1/leads",
        json={
            "name": " Ada Lovelace ",
            "email": "Ada@Example.COM",
            "phone": "(415) 555-0100",
            "company": "AE",
        },
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    lead = r.json()
    assert lead["email"] == "ada@example.com"
    assert lead["phone"] == "+14155550100"
    assert lead["name"] == "Ada Lovelace"
    assert lead["status"] == "new" and lead["source"] == "api"
    assert lead["pooled"] is True and lead["owner_id"] is None
    assert r.headers["etag"] == '"1"'
    async with tenant_session(state.sessions, uuid.UUID(org.id)) as s:
        events = (
            await s.execute(
                select(OutboxEvent).where(
                    col(OutboxEvent.org_id) == uuid.UUID(org.id),
                    col(OutboxEvent.event_type) == "lead.created",
                )
            )
        ).scalars()
        payloads = [e.payload for e in events]
    assert [p["lead_id"] for p in payloads] == [lead["id"]]


async def test_same_email_or_phone_merges_into_the_open_lead(org: Org) -> None:
    first = await make_lead(org, email="bob@acme.example", phone="+1 415 555 0100")
    r = await org.client.post(
        "/v1/leads", json={"email": "BOB@acme.example", "company": "Acme", "title": "CTO"}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    merged = r.json()
    assert merged["id"] == first["id"]
    assert merged["company"] == "Acme" and merged["title"] == "CTO"
    assert merged["touch_count"] == 2
    r = await org.client.post(
        "/v1/leads", json={"phone": "(415) 555-0100", "name": "Bob"}, headers=org.auth()
    )
    assert r.status_code == 200 and r.json()["id"] == first["id"] and r.json()["name"] == "Bob"
    # Nothing is overwritten: a different company is kept as a conflict on the touch, not applied.
    r = await org.client.post(
        "/v1/leads", json={"email": "bob@acme.example", "company": "Other"}, headers=org.auth()
    )
    assert r.json()["company"] == "Acme"
    acts = (await org.client.get(f"/v1/leads/{first['id']}/activities", headers=org.auth())).json()["data"]
    assert any(a["details"].get("conflicts") == {"company": "Other"} for a in acts)


async def test_concurrent_posts_of_one_email_make_one_lead(org: Org) -> None:
    email = f"race-{uuid.uuid4().hex[:6]}@acme.example"
    results = await asyncio.gather(
        *[org.client.post("/v1/leads", json={"email": email}, headers=org.auth()) for _ in range(8)]
    )
    assert sorted(r.status_code for r in results) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in results}) == 1


async def test_fuzzy_name_and_company_flags_possible_duplicate(org: Org) -> None:
    first = await make_lead(org, name="Jonathan Smith", company="Globex Corporation")
    second = await make_lead(org, name="Jonathon Smith", company="Globex Corporation")
    assert second["possible_duplicate_of"] == first["id"]
    third = await make_lead(org, name="Maria Garcia", company="Initech")
    assert third["possible_duplicate_of"] is None


async def test_create_without_email_or_phone_is_422(org: Org) -> None:
    r = await org.client.post("/v1/leads", json={"name": "Nobody"}, headers=org.auth())
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["code"] == "missing_contact"
    r = await org.client.post("/v1/leads", json={"email": "not-an-email"}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "email"
    r = await org.client.post("/v1/leads", json={"email": "a@b.example", "bogus": 1}, headers=org.auth())
    assert r.status_code == 422


async def test_list_filters_search_and_cursor_paging(org: Org) -> None:
    a = await make_lead(org, name="Alice Alpha", company="Zeta Labs", phone="+14155550111")
    b = await make_lead(org, name="Bruno Beta", company="Omega")
    c = await make_lead(org, name="Chen Gamma", company="Zeta Labs")
    await org.client.post(f"/v1/leads/{b['id']}/disqualify", json={"reason": "spam"}, headers=org.auth())

    async def ids(query: str) -> list[str]:
        r = await org.client.get(f"/v1/leads?{query}", headers=org.auth())
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["data"]]

    assert await ids("q=zeta") == [c["id"], a["id"]]
    assert await ids("q=555-0111") == [a["id"]]
    assert await ids("status=unqualified") == [b["id"]]
    assert await ids("status=new&status=unqualified&sort=created_at") == [a["id"], b["id"], c["id"]]
    assert await ids(f"created_from={a['created_at'].replace('+', '%2B')}&sort=created_at") == [
        a["id"],
        b["id"],
        c["id"],
    ]
    assert await ids(f"created_to={b['created_at'].replace('+', '%2B')}") == [a["id"]]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        query = "limit=2&sort=created_at" + (f"&cursor={cursor}" if cursor else "")
        r = (await org.client.get(f"/v1/leads?{query}", headers=org.auth())).json()
        seen += [x["id"] for x in r["data"]]
        cursor = r["next_cursor"]
        if not cursor:
            break
    assert seen == [a["id"], b["id"], c["id"]]
    r = await org.client.get("/v1/leads?sort=bogus", headers=org.auth())
    assert r.status_code == 422


async def test_update_with_if_match_and_status_machine(org: Org) -> None:
    lead = await make_lead(org)
    url = f"/v1/leads/{lead['id']}"
    r = await org.client.patch(url, json={"title": "VP"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["title"] == "VP" and r.headers["etag"] == '"2"'
    r = await org.client.patch(url, json={"title": "CEO"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["code"] == "stale_version"
    r = await org.client.patch(url, json={"phone": "garbage"}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.patch(url, json={"status": "converted"}, headers=org.auth())
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = await org.client.post(f"{url}/disqualify", json={}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post(f"{url}/qualify", headers=org.auth())
    assert r.status_code == 200 and r.json()["status"] == "qualified"
    r = await org.client.post(f"{url}/disqualify", json={"reason": "no budget"}, headers=org.auth())
    assert r.json()["status"] == "unqualified" and r.json()["status_reason"] == "no budget"


async def test_soft_delete_hides_the_lead(org: Org, state: AppState) -> None:
    lead = await make_lead(org)
    r = await org.client.delete(f"/v1/leads/{lead['id']}", headers=org.auth())
    assert r.status_code == 200 and r.json()["deleted_at"] is not None
    assert (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth())).status_code == 404
    listed = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    assert lead["id"] not in [x["id"] for x in listed]
    # A deleted lead no longer absorbs new touches.
    r = await org.client.post("/v1/leads", json={"email": lead["email"]}, headers=org.auth())
    assert r.status_code == 201 and r.json()["id"] != lead["id"]
    async with tenant_session(state.sessions, uuid.UUID(org.id)) as s:
        actions = (
            await s.execute(
                select(col(AuditEntry.action)).where(col(AuditEntry.entity_id) == uuid.UUID(lead["id"]))
            )
        ).scalars()
        assert "delete" in list(actions)


async def test_first_outbound_contact_sets_first_contacted_at(org: Org) -> None:
    lead = await make_lead(org)
    url = f"/v1/leads/{lead['id']}"
    r = await org.client.post(f"{url}/activities", json={"kind": "note", "body": "hi"}, headers=org.auth())
    assert r.status_code == 201
    assert (await org.client.get(url, headers=org.auth())).json()["first_contacted_at"] is None
    r = await org.client.post(
        f"{url}/activities", json={"kind": "email", "direction": "inbound"}, headers=org.auth()
    )
    assert (await org.client.get(url, headers=org.auth())).json()["first_contacted_at"] is None
    r = await org.client.post(
        f"{url}/activities",
        json={"kind": "call", "subject": "Intro", "occurred_at": "2026-11-20T10:00:00Z"},
        headers=org.auth(),
    )
    got = (await org.client.get(url, headers=org.auth())).json()
    assert got["first_contacted_at"].startswith("2026-11-20T10:00:00")
    assert got["status"] == "working"
    r = await org.client.post(f"{url}/activities", json={"kind": "meeting"}, headers=org.auth())
    assert (
        (await org.client.get(url, headers=org.auth())).json()["first_contacted_at"].startswith("2026-11-20")
    )
    timeline = (await org.client.get(f"{url}/activities", headers=org.auth())).json()["data"]
    assert [a["kind"] for a in timeline][-1] == "call"  # oldest last
    assert len(timeline) == 4
    r = await org.client.post(f"{url}/activities", json={"kind": "fax"}, headers=org.auth())
    assert r.status_code == 422


async def test_rep_sees_own_and_pool_and_claims_within_limit(org: Org) -> None:
    rep_id, rep_key = await org.add_user("rep")
    other_id, _ = await org.add_user("rep")
    pooled = await make_lead(org)
    others = await make_lead(org, owner_id=other_id)
    own = await make_lead(org, rep_key)
    assert own["owner_id"] == rep_id and own["pooled"] is False
    listed = {x["id"] for x in (await org.client.get("/v1/leads", headers=org.auth(rep_key))).json()["data"]}
    assert listed == {pooled["id"], own["id"]}
    assert (await org.client.get(f"/v1/leads/{others['id']}", headers=org.auth(rep_key))).status_code == 404
    # A pooled lead must be claimed before it is changed.
    r = await org.client.patch(f"/v1/leads/{pooled['id']}", json={"title": "x"}, headers=org.auth(rep_key))
    assert r.status_code == 403
    r = await org.client.post(f"/v1/leads/{pooled['id']}/claim", headers=org.auth(rep_key))
    assert r.status_code == 200 and r.json()["owner_id"] == rep_id and r.json()["pooled"] is False
    r = await org.client.post(f"/v1/leads/{pooled['id']}/claim", headers=org.auth(rep_key))
    assert r.status_code == 409
    r = await org.client.post(
        f"/v1/leads/{pooled['id']}/assign", json={"owner_id": other_id}, headers=org.auth(rep_key)
    )
    assert r.status_code == 403
    # Limit: the rep owns 2 open leads; set the limit to 2 and a third claim is refused.
    await org.client.patch("/v1/organisation", json={"settings": {"lead_claim_limit": 2}}, headers=org.auth())
    third = await make_lead(org)
    r = await org.client.post(f"/v1/leads/{third['id']}/claim", headers=org.auth(rep_key))
    assert r.status_code == 409 and "limit" in r.json()["detail"]
    r = await org.client.post(f"/v1/leads/{own['id']}/unassign", headers=org.auth(rep_key))
    assert r.status_code == 200 and r.json()["pooled"] is True
    r = await org.client.post(f"/v1/leads/{third['id']}/claim", headers=org.auth(rep_key))
    assert r.status_code == 200


async def test_manager_sees_team_leads_and_assigns_within_team(org: Org) -> None:
    team = (await org.client.post("/v1/teams", json={"name": "East"}, headers=org.auth())).json()
    mgr_id, mgr_key = await org.add_user("manager", team_id=team["id"])
    member_id, _ = await org.add_user("rep", team_id=team["id"])
    outsider_id, _ = await org.add_user("rep")
    team_lead = await make_lead(org, owner_id=member_id)
    outside = await make_lead(org, owner_id=outsider_id)
    pooled = await make_lead(org)
    listed = {x["id"] for x in (await org.client.get("/v1/leads", headers=org.auth(mgr_key))).json()["data"]}
    assert listed == {team_lead["id"], pooled["id"]}
    r = await org.client.post(
        f"/v1/leads/{pooled['id']}/assign", json={"owner_id": member_id}, headers=org.auth(mgr_key)
    )
    assert r.status_code == 200 and r.json()["owner_id"] == member_id and r.json()["team_id"] == team["id"]
    r = await org.client.post(
        f"/v1/leads/{team_lead['id']}/assign", json={"owner_id": outsider_id}, headers=org.auth(mgr_key)
    )
    assert r.status_code == 403
    assert (await org.client.get(f"/v1/leads/{outside['id']}", headers=org.auth(mgr_key))).status_code == 404
    r = await org.client.patch(f"/v1/leads/{team_lead['id']}", json={"title": "x"}, headers=org.auth(mgr_key))
    assert r.status_code == 200
    assert mgr_id


async def test_viewer_reads_but_cannot_write(org: Org) -> None:
    _, viewer_key = await org.add_user("viewer")
    lead = await make_lead(org)
    assert (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth(viewer_key))).status_code == 200
    r = await org.client.post("/v1/leads", json={"email": "v@x.example"}, headers=org.auth(viewer_key))
    assert r.status_code == 403
    r = await org.client.post(f"/v1/leads/{lead['id']}/claim", headers=org.auth(viewer_key))
    assert r.status_code == 403


async def test_other_organisation_cannot_see_leads_or_activities(org: Org, other_org: Org) -> None:
    lead = await make_lead(org)
    for path in (f"/v1/leads/{lead['id']}", f"/v1/leads/{lead['id']}/activities"):
        r = await other_org.client.get(path, headers=other_org.auth())
        assert r.status_code == 404
    r = await other_org.client.patch(f"/v1/leads/{lead['id']}", json={"title": "x"}, headers=other_org.auth())
    assert r.status_code == 404
    assert (await other_org.client.get("/v1/leads", headers=other_org.auth())).json()["data"] == []
    # The same email in another organisation is another lead.
    r = await other_org.client.post("/v1/leads", json={"email": lead["email"]}, headers=other_org.auth())
    assert r.status_code == 201


async def test_merge_moves_activities_and_fills_fields(org: Org, state: AppState) -> None:
    keep = await make_lead(org, name="Dana")
    dup = await make_lead(org, company="Initech", title="CFO")
    await org.client.post(f"/v1/leads/{dup['id']}/activities", json={"kind": "note"}, headers=org.auth())
    r = await org.client.post(
        f"/v1/leads/{keep['id']}/merge", json={"duplicate_id": dup["id"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    assert r.json()["company"] == "Initech" and r.json()["name"] == "Dana"
    acts = (await org.client.get(f"/v1/leads/{keep['id']}/activities", headers=org.auth())).json()["data"]
    assert len(acts) == 1
    merged = (await org.client.get(f"/v1/leads/{dup['id']}", headers=org.auth())).json()
    assert merged["duplicate_of"] == keep["id"]
    r = await org.client.post(
        f"/v1/leads/{keep['id']}/merge", json={"duplicate_id": dup["id"]}, headers=org.auth()
    )
    assert r.status_code == 409
    r = await org.client.post(
        f"/v1/leads/{keep['id']}/merge", json={"duplicate_id": keep["id"]}, headers=org.auth()
    )
    assert r.status_code == 422
    async with tenant_session(state.sessions, uuid.UUID(org.id)) as s:
        entry = (
            await s.execute(
                select(AuditEntry).where(
                    col(AuditEntry.entity_id) == uuid.UUID(keep["id"]), col(AuditEntry.action) == "merge"
                )
            )
        ).scalar_one()
    assert entry.changes["merged_lead_id"] == dup["id"]


async def test_activities_follow_lead_visibility(org: Org) -> None:
    rep_id, rep_key = await org.add_user("rep")
    other_id, other_key = await org.add_user("rep")
    _, viewer_key = await org.add_user("viewer")
    own = await make_lead(org, rep_key)
    pooled = await make_lead(org)
    r = await org.client.post(
        f"/v1/leads/{own['id']}/activities", json={"kind": "call"}, headers=org.auth(rep_key)
    )
    assert r.status_code == 201 and r.json()["owner_id"] == rep_id and r.json()["created_by"] == rep_id
    r = await org.client.post(
        f"/v1/leads/{own['id']}/activities", json={"kind": "note"}, headers=org.auth(other_key)
    )
    assert r.status_code == 404
    assert (
        await org.client.get(f"/v1/leads/{own['id']}/activities", headers=org.auth(other_key))
    ).status_code == 404
    r = await org.client.post(
        f"/v1/leads/{pooled['id']}/activities", json={"kind": "note"}, headers=org.auth(rep_key)
    )
    assert r.status_code == 403
    r = await org.client.post(
        f"/v1/leads/{own['id']}/activities", json={"kind": "note"}, headers=org.auth(viewer_key)
    )
    assert r.status_code == 403
    timeline = (
        await org.client.get(f"/v1/leads/{own['id']}/activities", headers=org.auth(viewer_key))
    ).json()
    assert [a["kind"] for a in timeline["data"]] == ["call"]
    r = await org.client.post(
        f"/v1/leads/{own['id']}/activities",
        json={"kind": "task", "owner_id": other_id},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 403
