"""Scoring rules: points with a breakdown, recomputed on create and update; admin-only writes."""

from __future__ import annotations

from tests.conftest import Org

RULES = [
    {"name": "Company email", "field": "email", "operator": "company_email", "points": 10},
    {"name": "Free mail", "field": "email", "operator": "free_mail", "points": -5},
    {
        "name": "Target industry",
        "field": "industry",
        "operator": "in",
        "value": ["SaaS", "Logistics"],
        "points": 15,
    },
    {"name": "Director", "field": "title", "operator": "contains", "value": "director", "points": 20},
    {"name": "Phone given", "field": "phone", "operator": "present", "points": 5},
    {"name": "From the API", "field": "source", "operator": "eq", "value": "api", "points": 1},
    {"name": "Big budget", "field": "attributes.budget", "operator": "gte", "value": 10000, "points": 7},
]


async def test_score_and_breakdown_follow_the_rules(org: Org) -> None:
    for rule in RULES:
        r = await org.client.post("/v1/scoring-rules", json=rule, headers=org.auth())
        assert r.status_code == 201, r.text
    r = await org.client.post(
        "/v1/leads",
        json={
            "email": "ops@northwind.example",
            "industry": "logistics",
            "title": "Operations Director",
            "attributes": {"budget": "25000"},
        },
        headers=org.auth(),
    )
    lead = r.json()
    assert lead["score"] == 10 + 15 + 20 + 1 + 7
    assert sorted(b["name"] for b in lead["score_breakdown"]) == sorted(
        ["Company email", "Target industry", "Director", "From the API", "Big budget"]
    )
    r = await org.client.patch(
        f"/v1/leads/{lead['id']}",
        json={"email": "ops@gmail.com", "phone": "+14155550100"},
        headers=org.auth(),
    )
    assert r.json()["score"] == -5 + 15 + 20 + 5 + 1 + 7
    rules = (await org.client.get("/v1/scoring-rules", headers=org.auth())).json()["data"]
    director = next(x for x in rules if x["name"] == "Director")
    r = await org.client.patch(
        f"/v1/scoring-rules/{director['id']}", json={"active": False}, headers=org.auth()
    )
    assert r.status_code == 200
    r = await org.client.patch(
        f"/v1/leads/{lead['id']}", json={"title": "Director of Ops"}, headers=org.auth()
    )
    assert r.json()["score"] == -5 + 15 + 5 + 1 + 7
    assert (
        await org.client.delete(f"/v1/scoring-rules/{director['id']}", headers=org.auth())
    ).status_code == 204


async def test_scoring_rule_validation_roles_and_isolation(org: Org, other_org: Org) -> None:
    r = await org.client.post(
        "/v1/scoring-rules",
        json={"name": "x", "field": "password", "operator": "eq", "points": 1},
        headers=org.auth(),
    )
    assert r.status_code == 422
    r = await org.client.post(
        "/v1/scoring-rules",
        json={"name": "x", "field": "email", "operator": "like", "points": 1},
        headers=org.auth(),
    )
    assert r.status_code == 422
    _, rep_key = await org.add_user("rep")
    r = await org.client.post("/v1/scoring-rules", json=RULES[0], headers=org.auth(rep_key))
    assert r.status_code == 403
    rule = (await org.client.post("/v1/scoring-rules", json=RULES[0], headers=org.auth())).json()
    assert (await org.client.get("/v1/scoring-rules", headers=org.auth(rep_key))).status_code == 200
    r = await other_org.client.patch(
        f"/v1/scoring-rules/{rule['id']}", json={"points": 3}, headers=other_org.auth()
    )
    assert r.status_code == 404
    assert (await other_org.client.get("/v1/scoring-rules", headers=other_org.auth())).json()["data"] == []
    lead = (
        await other_org.client.post("/v1/leads", json={"email": "a@corp.example"}, headers=other_org.auth())
    ).json()
    assert lead["score"] == 0
