"""Sales targets and dated exchange rates: who may set them, validation, tenant isolation."""

from __future__ import annotations

from tests.conftest import Org
from tests.factories import make_team


async def test_targets_by_role_scope_and_period(org: Org, other_org: Org) -> None:
    team = await make_team(org)
    rep, rep_key = await org.add_user("rep", team_id=team)
    manager, manager_key = await org.add_user("manager", team_id=team)
    outsider, _ = await org.add_user("rep")
    body = {"user_id": rep, "period": "quarter", "period_start": "2026-10-01", "amount": "9000.00"}
    r = await org.client.post("/v1/targets", json=body, headers=org.auth(manager_key))
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["period_end"], created["currency"], created["amount"]) == (
        "2027-01-01",
        "USD",
        "9000.00",
    )
    target_id = created["id"]
    assert (await org.client.post("/v1/targets", json=body, headers=org.auth())).status_code == 409
    r = await org.client.post(
        "/v1/targets", json={**body, "user_id": outsider}, headers=org.auth(manager_key)
    )
    assert r.status_code == 403
    assert (await org.client.post("/v1/targets", json=body, headers=org.auth(rep_key))).status_code == 403
    r = await org.client.post("/v1/targets", json={**body, "period_start": "2026-11-01"}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "not_period_start"
    r = await org.client.post("/v1/targets", json={**body, "team_id": team}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post(
        "/v1/targets",
        json={"team_id": team, "period": "year", "period_start": "2026-01-01", "amount": "1"},
        headers=org.auth(),
    )
    assert r.status_code == 201 and r.json()["period_end"] == "2027-01-01"

    r = await org.client.get("/v1/targets", params={"user_id": rep}, headers=org.auth(rep_key))
    assert [t["id"] for t in r.json()["data"]] == [target_id]
    r = await org.client.patch(
        f"/v1/targets/{target_id}", json={"amount": "9500.00"}, headers={**org.auth(), "If-Match": '"1"'}
    )
    assert r.status_code == 200 and r.json()["version"] == 2
    r = await org.client.patch(
        f"/v1/targets/{target_id}", json={"amount": "1"}, headers={**org.auth(), "If-Match": '"1"'}
    )
    assert r.status_code == 412
    assert (
        await other_org.client.get(f"/v1/targets/{target_id}", headers=other_org.auth())
    ).status_code == 404
    r = await other_org.client.delete(f"/v1/targets/{target_id}", headers=other_org.auth())
    assert r.status_code == 404
    assert (
        await org.client.delete(f"/v1/targets/{target_id}", headers=org.auth(manager_key))
    ).status_code == 204
    assert (await org.client.get(f"/v1/targets/{target_id}", headers=org.auth())).status_code == 404
    _ = manager


async def test_exchange_rates_replace_per_date_and_stay_in_their_org(org: Org, other_org: Org) -> None:
    rate = {"date": "2026-06-01", "from": "EUR", "to": "USD", "rate": "1.08"}
    r = await org.client.post("/v1/exchange-rates", json=rate, headers=org.auth())
    assert r.status_code == 201 and r.json()["from"] == "EUR" and r.json()["rate"] == "1.0800000000"
    r = await org.client.post("/v1/exchange-rates", json={**rate, "rate": "1.09"}, headers=org.auth())
    rate_id = r.json()["id"]
    listed = (await org.client.get("/v1/exchange-rates", headers=org.auth())).json()["data"]
    assert [(x["date"], x["rate"]) for x in listed] == [("2026-06-01", "1.0900000000")]
    bad = await org.client.post("/v1/exchange-rates", json={**rate, "to": "EUR"}, headers=org.auth())
    assert bad.status_code == 422
    assert (
        await org.client.post("/v1/exchange-rates", json={**rate, "rate": "0"}, headers=org.auth())
    ).status_code == 422
    _, rep_key = await org.add_user("rep")
    assert (
        await org.client.post("/v1/exchange-rates", json=rate, headers=org.auth(rep_key))
    ).status_code == 403
    assert (await other_org.client.get("/v1/exchange-rates", headers=other_org.auth())).json()["data"] == []
    assert (
        await other_org.client.delete(f"/v1/exchange-rates/{rate_id}", headers=other_org.auth())
    ).status_code == 404
    assert (await org.client.delete(f"/v1/exchange-rates/{rate_id}", headers=org.auth())).status_code == 204


async def test_forecast_category_is_a_stage_setting(org: Org) -> None:
    pipeline = (await org.client.get("/v1/pipelines", headers=org.auth())).json()[0]
    categories = {s["key"]: s["forecast_category"] for s in pipeline["stages"]}
    assert categories["quote"] == "best_case" and categories["negotiation"] == "commit"
    assert categories["prospect"] == "pipeline"
    stage = next(s for s in pipeline["stages"] if s["key"] == "needs_confirmed")
    r = await org.client.patch(
        f"/v1/pipelines/{pipeline['id']}/stages/{stage['id']}",
        json={"forecast_category": "commit"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["forecast_category"] == "commit"
    r = await org.client.patch(
        f"/v1/pipelines/{pipeline['id']}/stages/{stage['id']}",
        json={"forecast_category": "maybe"},
        headers=org.auth(),
    )
    assert r.status_code == 422
