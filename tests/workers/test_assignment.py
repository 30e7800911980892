"""Auto-assignment end to end: rules, strategies, skips with reasons, the pool, SLA reassignment."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Org, wait_for
from tests.factories import make_lead


async def _rule(org: Org, **body: Any) -> dict[str, Any]:
    r = await org.client.post("/v1/assignment-rules", json={"name": "R", **body}, headers=org.auth())
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _decision(org: Org, lead_id: str) -> dict[str, Any] | None:
    r = await org.client.get(f"/v1/leads/{lead_id}/assignment", headers=org.auth())
    return dict(r.json()) if r.status_code == 200 else None


async def test_round_robin_spreads_concurrent_leads_evenly(org: Org, worker: None) -> None:
    reps = [(await org.add_user("rep"))[0] for _ in range(3)]
    await _rule(org, target_user_ids=reps, strategy="round_robin")
    leads = await asyncio.gather(
        *[make_lead(org, name=f"Lead {i}", email=f"lead{i}@example.com") for i in range(30)]
    )

    async def all_decided() -> list[dict[str, Any]] | None:
        decisions = [await _decision(org, lead["id"]) for lead in leads]
        return decisions if all(decisions) else None  # type: ignore[return-value]

    decisions = await wait_for(all_decided, timeout=30)
    owners = Counter(d["chosen_user_id"] for d in decisions)
    assert owners == {rep: 10 for rep in reps}
    assert all(d["outcome"] == "assigned" and d["trigger"] == "lead.created" for d in decisions)
    for lead in leads[:3]:
        got = (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth())).json()
        assert got["owner_id"] in reps and got["pooled"] is False and got["assigned_at"]


async def test_inactive_and_full_reps_are_skipped_with_reasons(org: Org, worker: None) -> None:
    inactive, _ = await org.add_user("rep", name="Gone")
    full, _ = await org.add_user("rep", name="Full", capacity=0)
    ok, _ = await org.add_user("rep", name="Ready")
    await org.client.patch(f"/v1/users/{inactive}", json={"active": False}, headers=org.auth())
    await _rule(
        org,
        target_user_ids=[inactive, full, ok],
        conditions=[{"field": "country", "op": "eq", "value": "CN"}],
    )
    lead = await make_lead(org, name="张伟", email="zhang@example.cn", country="CN")
    decision = await wait_for(lambda: _decision(org, lead["id"]))
    assert decision["chosen_user_id"] == ok
    reasons = {c["user_id"]: c["reason"] for c in decision["candidates"]}
    assert reasons[inactive] == "inactive"
    assert reasons[full] == "at capacity (0/0 open leads)"
    assert reasons[ok] == "chosen by round_robin"

    other = await make_lead(org, name="Bob", email="bob@example.com", country="US")
    pooled = await wait_for(lambda: _decision(org, other["id"]))
    assert pooled["outcome"] == "pooled" and pooled["chosen_user_id"] is None
    assert "No rule matched" in pooled["explanation"]
    got = (await org.client.get(f"/v1/leads/{other['id']}", headers=org.auth())).json()
    assert got["pooled"] is True and got["owner_id"] is None


async def test_no_eligible_user_falls_through_to_the_next_rule(org: Org, worker: None) -> None:
    full, _ = await org.add_user("rep", capacity=0)
    backup, _ = await org.add_user("rep")
    await _rule(org, name="First", target_user_ids=[full], position=1)
    await _rule(org, name="Backup", target_user_ids=[backup], position=2)
    lead = await make_lead(org, email="fall@example.com")
    decision = await wait_for(lambda: _decision(org, lead["id"]))
    assert decision["rule_name"] == "Backup" and decision["chosen_user_id"] == backup
    assert decision["rules_considered"][0]["result"] == "no eligible candidate"


async def test_missed_contact_sla_moves_the_lead_and_a_call_prevents_it(org: Org, worker: None) -> None:
    a, _ = await org.add_user("rep", name="A")
    b, _ = await org.add_user("rep", name="B")
    await _rule(org, target_user_ids=[a, b], contact_sla="PT2S")
    first = await make_lead(org, email="sla1@example.com")
    d1 = await wait_for(lambda: _decision(org, first["id"]))
    assert d1["chosen_user_id"] == a and d1["sla_due_at"]

    async def reassigned() -> dict[str, Any] | None:
        d = await _decision(org, first["id"])
        return d if d and d["trigger"] == "sla" else None

    d2 = await wait_for(reassigned, timeout=15)
    assert d2["chosen_user_id"] == b and d2["previous_owner_id"] == a
    assert "current owner, who missed the contact SLA" in {c["reason"] for c in d2["candidates"]}
    assert (await org.client.get(f"/v1/leads/{first['id']}", headers=org.auth())).json()["owner_id"] == b

    # A call logged before the deadline keeps the lead where it is (a longer SLA, so a slow
    # machine cannot miss the window between assignment and call).
    rule = (await org.client.get("/v1/assignment-rules", headers=org.auth())).json()["data"][0]
    r = await org.client.patch(
        f"/v1/assignment-rules/{rule['id']}", json={"contact_sla": "PT6S"}, headers=org.auth()
    )
    assert r.status_code == 200
    second = await make_lead(org, email="sla2@example.com")
    d3 = await wait_for(lambda: _decision(org, second["id"]))
    r = await org.client.post(
        f"/v1/leads/{second['id']}/activities",
        json={"kind": "call", "subject": "Intro call"},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    assert datetime.fromisoformat(r.json()["occurred_at"]) < datetime.fromisoformat(d3["sla_due_at"])
    while datetime.now(UTC) < datetime.fromisoformat(d3["sla_due_at"]) + timedelta(seconds=3):
        await asyncio.sleep(0.5)
    d4 = await _decision(org, second["id"])
    assert d4 is not None and d4["id"] == d3["id"]  # no SLA decision followed
    got = (await org.client.get(f"/v1/leads/{second['id']}", headers=org.auth())).json()
    assert got["owner_id"] == d3["chosen_user_id"]


async def test_preview_assigns_nothing_and_moves_no_cursor(org: Org) -> None:
    a, _ = await org.add_user("rep")
    b, _ = await org.add_user("rep")
    await _rule(org, target_user_ids=[a, b], conditions=[{"field": "score", "op": "gte", "value": 0}])
    for _ in range(2):
        r = await org.client.post(
            "/v1/assignment-rules/preview", json={"lead": {"score": 10}}, headers=org.auth()
        )
        assert r.status_code == 200
        assert r.json()["chosen_user_id"] == a and r.json()["outcome"] == "assigned"
    r = await org.client.post(
        "/v1/assignment-rules/preview", json={"lead": {"score": -5}}, headers=org.auth()
    )
    assert r.json()["outcome"] == "pooled"


async def test_rules_validate_their_target_and_durations(org: Org) -> None:
    rep, _ = await org.add_user("rep")
    r = await org.client.post("/v1/assignment-rules", json={"name": "x"}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post(
        "/v1/assignment-rules",
        json={"name": "x", "target_user_ids": [rep], "contact_sla": "soon"},
        headers=org.auth(),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "contact_sla"
    r = await org.client.post(
        "/v1/assignment-rules",
        json={
            "name": "x",
            "target_user_ids": [rep],
            "conditions": [{"field": "score", "op": "approx", "value": 1}],
        },
        headers=org.auth(),
    )
    assert r.status_code == 422
    rule = await _rule(org, target_user_ids=[rep], strategy="weighted")
    r = await org.client.patch(
        f"/v1/assignment-rules/{rule['id']}",
        json={"strategy": "least_loaded"},
        headers={**org.auth(), "If-Match": '"9"'},
    )
    assert r.status_code == 412


async def test_rules_are_for_admins_and_managers_of_the_same_org(org: Org, other_org: Org) -> None:
    rep, rep_key = await org.add_user("rep")
    manager, manager_key = await org.add_user("manager")
    _, viewer_key = await org.add_user("viewer")
    rule = await _rule(org, target_user_ids=[rep])
    assert (await org.client.get("/v1/assignment-rules", headers=org.auth(rep_key))).status_code == 403
    assert (await org.client.get("/v1/assignment-rules", headers=org.auth(viewer_key))).status_code == 403
    # A manager reads and previews the rules but cannot write one that routes every lead to them.
    assert (await org.client.get("/v1/assignment-rules", headers=org.auth(manager_key))).status_code == 200
    r = await org.client.post(
        "/v1/assignment-rules",
        json={"name": "mine", "position": 0, "target_user_ids": [manager]},
        headers=org.auth(manager_key),
    )
    assert r.status_code == 403
    for change in (
        org.client.patch(
            f"/v1/assignment-rules/{rule['id']}", json={"position": 0}, headers=org.auth(manager_key)
        ),
        org.client.delete(f"/v1/assignment-rules/{rule['id']}", headers=org.auth(manager_key)),
    ):
        assert (await change).status_code == 403
    listed = (await org.client.get("/v1/assignment-rules", headers=org.auth())).json()["data"]
    assert [r["id"] for r in listed] == [rule["id"]] and listed[0]["position"] == rule["position"]
    assert (
        await other_org.client.get(f"/v1/assignment-rules/{rule['id']}", headers=other_org.auth())
    ).status_code == 404
    assert (await other_org.client.get("/v1/assignment-rules", headers=other_org.auth())).json()["data"] == []
    r = await other_org.client.post(
        "/v1/assignment-rules", json={"name": "steal", "target_user_ids": [rep]}, headers=other_org.auth()
    )
    assert r.status_code == 422


async def test_missed_sla_can_escalate_to_the_team_manager(org: Org, worker: None) -> None:
    manager, _ = await org.add_user("manager", name="Boss")
    rep, _ = await org.add_user("rep", name="Rep")
    team = (
        await org.client.post(
            "/v1/teams",
            json={"name": "Inside sales", "manager_id": manager, "member_ids": [rep]},
            headers=org.auth(),
        )
    ).json()
    await _rule(org, target_user_ids=[rep], contact_sla="PT2S", sla_action="escalate")
    lead = await make_lead(org, email="escalate@example.com")
    first = await wait_for(lambda: _decision(org, lead["id"]))
    assert first["chosen_user_id"] == rep

    async def escalated() -> dict[str, Any] | None:
        d = await _decision(org, lead["id"])
        return d if d and d["outcome"] == "escalated" else None

    decision = await wait_for(escalated, timeout=15)
    assert decision["chosen_user_id"] == manager and decision["previous_owner_id"] == rep
    got = (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth())).json()
    assert got["owner_id"] == manager
    assert team["manager_id"] == manager


async def test_a_leads_write_key_cannot_change_routing_or_scoring(org: Org) -> None:
    rep, _ = await org.add_user("rep")
    keys = {}
    for scopes in (["leads:write"], ["settings:write"]):
        r = await org.client.post(
            "/v1/api-keys", json={"name": "k", "user_id": org.admin_id, "scopes": scopes}, headers=org.auth()
        )
        assert r.status_code == 201, r.text
        keys[scopes[0]] = r.json()["key"]
    rule = {"name": "all to rep", "position": 0, "target_user_ids": [rep]}
    scoring = {"name": "x", "field": "country", "operator": "eq", "value": "DE", "points": 50}
    for path, body in (("/v1/assignment-rules", rule), ("/v1/scoring-rules", scoring)):
        r = await org.client.post(path, json=body, headers=org.auth(keys["leads:write"]))
        assert r.status_code == 403, r.text
        r = await org.client.post(path, json=body, headers=org.auth(keys["settings:write"]))
        assert r.status_code == 201, r.text


async def test_a_decision_counts_the_open_leads_it_depends_on(org: Org, worker: None) -> None:
    """Round robin reads a candidate's open leads only to check a capacity: the reps without one
    are logged uncounted (null), so the count does not grow with every lead they hold; least
    loaded counts everyone, and so does a preview."""
    capped, _ = await org.add_user("rep", name="Capped", capacity=5)
    free, _ = await org.add_user("rep", name="Free")
    for owner, n in ((capped, 2), (free, 1)):  # held before any rule exists (pooled, then given)
        for _ in range(n):
            lead = await make_lead(org)
            r = await org.client.post(
                f"/v1/leads/{lead['id']}/assign", json={"owner_id": owner}, headers=org.auth()
            )
            assert r.status_code == 200, r.text
    closed = await make_lead(org)  # a closed lead of Free's does not count
    await org.client.post(f"/v1/leads/{closed['id']}/assign", json={"owner_id": free}, headers=org.auth())
    r = await org.client.post(
        f"/v1/leads/{closed['id']}/disqualify", json={"reason": "spam"}, headers=org.auth()
    )
    assert r.status_code == 200, r.text

    rule = await _rule(org, target_user_ids=[capped, free], strategy="round_robin")
    lead = await make_lead(org)
    decision = await wait_for(lambda: _decision(org, lead["id"]))
    assert decision["chosen_user_id"] == capped
    loads = {c["user_id"]: c["open_leads"] for c in decision["candidates"]}
    assert loads == {capped: 2, free: None}

    r = await org.client.post("/v1/assignment-rules/preview", json={"lead": {}}, headers=org.auth())
    assert r.status_code == 200, r.text
    assert {c["user_id"]: c["open_leads"] for c in r.json()["candidates"]} == {capped: 3, free: 1}

    r = await org.client.patch(
        f"/v1/assignment-rules/{rule['id']}", json={"strategy": "least_loaded"}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    second = await make_lead(org)
    decision = await wait_for(lambda: _decision(org, second["id"]))
    assert decision["chosen_user_id"] == free
    assert {c["user_id"]: c["open_leads"] for c in decision["candidates"]} == {capped: 3, free: 1}
