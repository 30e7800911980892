"""Lead conversion into account + contact + deal, linked back."""

from __future__ import annotations

from tests.conftest import Org
from tests.factories import make_lead


async def test_convert_creates_account_contact_and_deal_linked_back(org: Org) -> None:
    lead = await make_lead(
        org,
        name="王芳",
        email="wang.fang@acme-sh.cn",
        phone="+86 138 0013 8000",
        company="上海艾克米有限公司",
        title="采购经理",
        country="CN",
    )
    r = await org.client.post(
        f"/v1/leads/{lead['id']}/convert",
        json={"amount": "120000.00", "currency": "CNY"},
        headers={**org.auth(), "If-Match": f'"{lead["version"]}"'},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["account"]["name"] == "上海艾克米有限公司"
    assert (
        body["contact"]["email"] == "wang.fang@acme-sh.cn"
        and body["contact"]["account_id"] == body["account"]["id"]
    )
    deal = body["deal"]
    assert deal["lead_id"] == lead["id"] and deal["account_id"] == body["account"]["id"]
    assert deal["contact_id"] == body["contact"]["id"] and deal["amount"] == "120000.00"
    pipeline = (await org.client.get(f"/v1/pipelines/{deal['pipeline_id']}", headers=org.auth())).json()
    assert deal["stage_id"] == pipeline["stages"][0]["id"]
    converted = (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth())).json()
    assert converted["status"] == "converted"
    assert converted["converted_deal_id"] == deal["id"]
    assert converted["converted_account_id"] == body["account"]["id"]
    assert converted["converted_contact_id"] == body["contact"]["id"]
    again = await org.client.post(f"/v1/leads/{lead['id']}/convert", json={}, headers=org.auth())
    assert again.status_code == 409


async def test_convert_onto_an_existing_account_without_a_deal(org: Org) -> None:
    account = (await org.client.post("/v1/accounts", json={"name": "Existing Co"}, headers=org.auth())).json()
    lead = await make_lead(org, name="Ann", email="ann@existing.example")
    r = await org.client.post(
        f"/v1/leads/{lead['id']}/convert",
        json={"account_id": account["id"], "create_deal": False},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["account"]["id"] == account["id"] and r.json()["deal"] is None


async def test_convert_checks_roles_versions_and_organisations(org: Org, other_org: Org) -> None:
    owner, owner_key = await org.add_user("rep")
    _, other_rep_key = await org.add_user("rep")
    _, viewer_key = await org.add_user("viewer")
    lead = await make_lead(org, email="owned@example.com", owner_id=owner)
    url = f"/v1/leads/{lead['id']}/convert"
    assert (await org.client.post(url, json={}, headers=org.auth(viewer_key))).status_code == 403
    assert (await org.client.post(url, json={}, headers=org.auth(other_rep_key))).status_code in (403, 404)
    assert (await other_org.client.post(url, json={}, headers=other_org.auth())).status_code == 404
    stale = await org.client.post(url, json={}, headers={**org.auth(owner_key), "If-Match": '"99"'})
    assert stale.status_code == 412
    bad = await org.client.post(url, json={"amount": "-1"}, headers=org.auth(owner_key))
    assert bad.status_code == 422
    still = (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth())).json()
    assert still["status"] != "converted"
    ok = await org.client.post(url, json={}, headers=org.auth(owner_key))
    assert ok.status_code == 200 and ok.json()["deal"]["owner_id"] == owner
