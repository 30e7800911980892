"""Pipelines: the seeded default, admin edits, reorder, stage deletion with a target, the board."""

from __future__ import annotations

from typing import Any

from tests.conftest import Org
from tests.factories import make_deal, stages


async def test_a_new_organisation_has_the_default_pipeline(org: Org) -> None:
    r = await org.client.get("/v1/pipelines", headers=org.auth())
    assert r.status_code == 200
    (pipeline,) = r.json()
    assert pipeline["is_default"] is True
    names = [(s["key"], s["name"], s["name_en"], s["kind"], s["probability"]) for s in pipeline["stages"]]
    assert names == [
        ("prospect", "潜在客户", "Prospect", "open", "10.00"),
        ("first_contact", "初步接触", "First contact", "open", "20.00"),
        ("needs_confirmed", "需求确认", "Needs confirmed", "open", "40.00"),
        ("quote", "报价", "Quote", "open", "60.00"),
        ("negotiation", "谈判", "Negotiation", "open", "80.00"),
        ("won", "成交", "Won", "won", "100.00"),
        ("lost", "输单", "Lost", "lost", "0.00"),
    ]
    assert pipeline["stages"][2]["required_fields"] == ["amount"]


async def test_admin_creates_a_pipeline_and_others_cannot(org: Org) -> None:
    body: dict[str, Any] = {
        "name": "Renewals",
        "stages": [
            {"key": "open", "name": "续约", "probability": "50"},
            {"key": "won", "name": "Won", "kind": "won", "probability": "100"},
            {"key": "lost", "name": "Lost", "kind": "lost"},
        ],
    }
    _, manager = await org.add_user("manager")
    r = await org.client.post("/v1/pipelines", json=body, headers=org.auth(manager))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await org.client.post("/v1/pipelines", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    assert r.json()["is_default"] is False and [s["key"] for s in r.json()["stages"]] == [
        "open",
        "won",
        "lost",
    ]
    renewals = r.json()
    r = await org.client.post("/v1/pipelines", json=body, headers=org.auth())
    assert r.status_code == 409
    first = renewals["stages"][0]["id"]
    r = await org.client.post("/v1/deals", json={"name": "Renewal", "stage_id": first}, headers=org.auth())
    assert r.status_code == 201 and r.json()["pipeline_id"] == renewals["id"]
    assert r.json()["probability"] == "50.00"
    won = renewals["stages"][1]["id"]
    r = await org.client.post("/v1/deals", json={"name": "x", "stage_id": won}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "not_an_open_stage"
    bad_key = {
        **body,
        "name": "Bad key",
        "stages": [{**body["stages"][0], "key": "Not A Key"}, *body["stages"][1:]],
    }
    r = await org.client.post("/v1/pipelines", json=bad_key, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("stages.0.key")
    bad = {**body, "name": "No won", "stages": [body["stages"][0], body["stages"][2]]}
    r = await org.client.post("/v1/pipelines", json=bad, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "won_lost_stages"


async def test_rename_and_reorder_keep_history_valid(org: Org) -> None:
    s = await stages(org)
    deal = await make_deal(org)
    pid = s["_pipeline"]
    r = await org.client.patch(
        f"/v1/pipelines/{pid}/stages/{s['prospect']}", json={"name": "线索"}, headers=org.auth()
    )
    assert r.status_code == 200 and r.json()["name"] == "线索"
    order = [
        s[k] for k in ("first_contact", "prospect", "needs_confirmed", "quote", "negotiation", "won", "lost")
    ]
    r = await org.client.put(
        f"/v1/pipelines/{pid}/stages/order", json={"stage_ids": order}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    assert [st["id"] for st in r.json()["stages"]] == order
    bad = [s["won"], *order[:5], s["lost"]]
    r = await org.client.put(f"/v1/pipelines/{pid}/stages/order", json={"stage_ids": bad}, headers=org.auth())
    assert r.status_code == 422
    history = (await org.client.get(f"/v1/deals/{deal['id']}/history", headers=org.auth())).json()
    assert history[0]["to_stage_id"] == s["prospect"]


async def test_deleting_a_stage_with_deals_needs_a_target(org: Org) -> None:
    s = await stages(org)
    pid = s["_pipeline"]
    deal = await make_deal(org)
    r = await org.client.delete(f"/v1/pipelines/{pid}/stages/{s['prospect']}", headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "target_stage_id"
    r = await org.client.delete(
        f"/v1/pipelines/{pid}/stages/{s['prospect']}?target_stage_id={s['first_contact']}", headers=org.auth()
    )
    assert r.status_code == 200, r.text
    assert s["prospect"] not in [st["id"] for st in r.json()["stages"]]
    moved = (await org.client.get(f"/v1/deals/{deal['id']}", headers=org.auth())).json()
    assert moved["stage_id"] == s["first_contact"]
    history = (await org.client.get(f"/v1/deals/{deal['id']}/history", headers=org.auth())).json()
    stage_rows = [h for h in history if h["kind"] == "stage"]
    assert [(h["from_stage_id"], h["to_stage_id"]) for h in stage_rows] == [
        (None, s["prospect"]),
        (s["prospect"], s["first_contact"]),
    ]
    r = await org.client.delete(f"/v1/pipelines/{pid}/stages/{s['won']}", headers=org.auth())
    assert r.status_code == 409


async def test_board_counts_and_totals_per_currency(org: Org) -> None:
    s = await stages(org)
    await make_deal(org, amount="100.50", currency="CNY", probability="50")
    await make_deal(org, amount="200.00", currency="CNY")
    await make_deal(org, amount="1000", currency="JPY")
    r = await org.client.get(f"/v1/pipelines/{s['_pipeline']}/board", headers=org.auth())
    assert r.status_code == 200, r.text
    first = r.json()["columns"][0]
    assert first["stage"]["key"] == "prospect" and first["count"] == 3 and len(first["deals"]) == 3
    totals = {t["currency"]: t for t in first["totals"]}
    assert totals["CNY"]["amount"] == "300.50" and totals["CNY"]["count"] == 2
    assert totals["CNY"]["weighted_amount"] == "70.25"  # 100.50 × 50% + 200.00 × 10%
    assert totals["JPY"] == {"currency": "JPY", "count": 1, "amount": "1000", "weighted_amount": "100"}
    assert r.json()["columns"][1]["count"] == 0


async def test_pipelines_are_isolated_between_organisations(org: Org, other_org: Org) -> None:
    s = await stages(org)
    r = await other_org.client.get(f"/v1/pipelines/{s['_pipeline']}", headers=other_org.auth())
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await other_org.client.get(f"/v1/pipelines/{s['_pipeline']}/board", headers=other_org.auth())
    assert r.status_code == 404
    theirs = await stages(other_org)
    assert theirs["_pipeline"] != s["_pipeline"]
    r = await other_org.client.patch(
        f"/v1/pipelines/{s['_pipeline']}", json={"name": "x"}, headers=other_org.auth()
    )
    assert r.status_code == 404


async def test_stale_if_match_on_a_pipeline_is_412(org: Org) -> None:
    s = await stages(org)
    r = await org.client.patch(
        f"/v1/pipelines/{s['_pipeline']}", json={"name": "Main"}, headers={**org.auth(), "If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    r = await org.client.patch(
        f"/v1/pipelines/{s['_pipeline']}", json={"name": "Other"}, headers={**org.auth(), "If-Match": '"1"'}
    )
    assert r.status_code == 412 and r.json()["code"] == "stale_version"


async def test_board_shows_each_role_only_the_deals_it_may_see(org: Org) -> None:
    s = await stages(org)
    _, rep = await org.add_user("rep")
    _, viewer = await org.add_user("viewer")
    own = await make_deal(org, rep, amount="10.00", currency="USD")
    await make_deal(org, amount="99.00", currency="USD")
    board = f"/v1/pipelines/{s['_pipeline']}/board"
    first = (await org.client.get(board, headers=org.auth(rep))).json()["columns"][0]
    assert first["count"] == 1 and [d["id"] for d in first["deals"]] == [own["id"]]
    assert first["totals"] == [{"currency": "USD", "count": 1, "amount": "10.00", "weighted_amount": "1.00"}]
    assert (await org.client.get(board, headers=org.auth(viewer))).json()["columns"][0]["count"] == 2
    r = await org.client.post(
        f"/v1/pipelines/{s['_pipeline']}/stages", json={"name": "x"}, headers=org.auth(viewer)
    )
    assert r.status_code == 403
    r = await org.client.post(
        f"/v1/pipelines/{s['_pipeline']}/stages",
        json={"name": "演示", "key": "demo", "position": 1},
        headers=org.auth(),
    )
    assert r.status_code == 201 and [st["key"] for st in r.json()["stages"]][:3] == [
        "prospect",
        "demo",
        "first_contact",
    ]
