"""Products, accounts and contacts: CRUD, uniqueness, roles, ETags, tenant isolation."""

from __future__ import annotations

from tests.conftest import Org


async def test_products_crud_with_unique_sku_and_money_digits(org: Org) -> None:
    body = {"sku": "SKU-1", "name": "Widget", "unit_price": "19.99", "currency": "CNY", "tax_rate": "13"}
    r = await org.client.post("/v1/products", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    product = r.json()
    assert (product["unit_price"], product["tax_rate"], product["active"]) == ("19.99", "13", True)
    r = await org.client.post("/v1/products", json=body, headers=org.auth())
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    r = await org.client.post(
        "/v1/products", json={**body, "sku": "J", "currency": "JPY", "unit_price": "1.5"}, headers=org.auth()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "unit_price"
    url = f"/v1/products/{product['id']}"
    r = await org.client.patch(url, json={"active": False}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["active"] is False and r.headers["etag"] == '"2"'
    r = await org.client.patch(url, json={"name": "x"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 412
    r = await org.client.get("/v1/products?active=false", headers=org.auth())
    assert [p["sku"] for p in r.json()["data"]] == ["SKU-1"]
    r = await org.client.get("/v1/products?q=widg", headers=org.auth())
    assert len(r.json()["data"]) == 1


async def test_products_roles_and_isolation(org: Org, other_org: Org) -> None:
    _, rep = await org.add_user("rep")
    _, manager = await org.add_user("manager")
    _, viewer = await org.add_user("viewer")
    body = {"sku": "S", "name": "n", "unit_price": "1.00", "currency": "USD"}
    assert (await org.client.post("/v1/products", json=body, headers=org.auth(rep))).status_code == 403
    assert (await org.client.post("/v1/products", json=body, headers=org.auth(viewer))).status_code == 403
    r = await org.client.post("/v1/products", json=body, headers=org.auth(manager))
    assert r.status_code == 201
    product = r.json()
    assert (await org.client.get(f"/v1/products/{product['id']}", headers=org.auth(rep))).status_code == 200
    r = await other_org.client.get(f"/v1/products/{product['id']}", headers=other_org.auth())
    assert r.status_code == 404
    assert (await other_org.client.get("/v1/products", headers=other_org.auth())).json()["data"] == []
    r = await other_org.client.post("/v1/products", json=body, headers=other_org.auth())
    assert r.status_code == 201  # sku is unique per organisation, not globally


async def test_accounts_and_contacts(org: Org, other_org: Org) -> None:
    _, viewer = await org.add_user("viewer")
    _, rep = await org.add_user("rep")
    credit = {"credit_limit": "50000", "credit_currency": "CNY", "credit_rating": "A"}
    r = await org.client.post("/v1/accounts", json={"name": "北京客户", **credit}, headers=org.auth(rep))
    assert r.status_code == 403  # credit terms are for admins and managers
    r = await org.client.post("/v1/accounts", json={"name": "北京客户"}, headers=org.auth(rep))
    assert r.status_code == 201, r.text
    mine = r.json()
    r = await org.client.patch(
        f"/v1/accounts/{mine['id']}", json={"credit_limit": "9999999"}, headers=org.auth(rep)
    )
    assert r.status_code == 403
    r = await org.client.patch(f"/v1/accounts/{mine['id']}", json=credit, headers=org.auth())
    assert r.status_code == 200, r.text
    account = r.json()
    assert account["name"] == "北京客户" and account["credit_rating"] == "A"
    r = await org.client.post(
        "/v1/contacts",
        json={"name": "李娜", "email": "Li.Na@Example.com", "account_id": account["id"]},
        headers=org.auth(),
    )
    assert r.status_code == 201 and r.json()["email"] == "li.na@example.com"
    contact = r.json()
    r = await org.client.get(f"/v1/contacts?account_id={account['id']}", headers=org.auth(viewer))
    assert [c["id"] for c in r.json()["data"]] == [contact["id"]]
    assert (
        await org.client.post("/v1/accounts", json={"name": "x"}, headers=org.auth(viewer))
    ).status_code == 403
    r = await org.client.patch(
        f"/v1/accounts/{account['id']}",
        json={"name": "北京大客户"},
        headers={**org.auth(), "If-Match": f'"{account["version"]}"'},
    )
    assert r.status_code == 200 and r.json()["name"] == "北京大客户"
    r = await org.client.patch(
        f"/v1/accounts/{account['id']}",
        json={"name": "y"},
        headers={**org.auth(), "If-Match": f'"{account["version"]}"'},
    )
    assert r.status_code == 412
    r = await org.client.post(
        "/v1/contacts", json={"name": "x", "account_id": account["id"]}, headers=other_org.auth()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "account_id"
    for path in (f"/v1/accounts/{account['id']}", f"/v1/contacts/{contact['id']}"):
        r = await other_org.client.get(path, headers=other_org.auth())
        assert r.status_code == 404
    assert (await other_org.client.get("/v1/accounts", headers=other_org.auth())).json()["data"] == []
    assert (await other_org.client.get("/v1/contacts", headers=other_org.auth())).json()["data"] == []
