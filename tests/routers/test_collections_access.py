"""Acceptance 7: tenant isolation and role visibility for orders, installments and payments
(policies, messages and risks: test_dunning.py and test_credit_risks.py)."""

from __future__ import annotations

from tests.conftest import Org
from tests.factories import make_account, make_order, make_team, pay


async def test_roles_see_their_own_their_teams_or_every_receivable(org: Org) -> None:
    team = await make_team(org)
    _, manager_key = await org.add_user("manager", team_id=team)
    rep_id, rep_key = await org.add_user("rep", team_id=team)
    outsider_id, outsider_key = await org.add_user("rep")
    _, viewer_key = await org.add_user("viewer")
    _, finance_key = await org.add_user("rep", finance=True)
    mine = await make_account(org, owner_id=rep_id)
    theirs = await make_account(org, owner_id=outsider_id)
    my_order = await make_order(org, mine["id"])
    their_order = await make_order(org, theirs["id"])
    my_payment = await pay(org, mine["id"], "10.00", received_at="2026-11-01")
    their_payment = await pay(org, theirs["id"], "10.00", received_at="2026-11-01")

    async def ids(path: str, key: str) -> set[str]:
        r = await org.client.get(path, headers=org.auth(key))
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["data"]}

    everything = {my_order["id"], their_order["id"]}
    assert await ids("/v1/orders", org.admin_key) == everything
    assert await ids("/v1/orders", viewer_key) == everything
    assert await ids("/v1/orders", finance_key) == everything
    assert await ids("/v1/orders", manager_key) == {my_order["id"]}  # the team's
    assert await ids("/v1/orders", rep_key) == {my_order["id"]}
    assert await ids("/v1/orders", outsider_key) == {their_order["id"]}
    assert await ids("/v1/payments", rep_key) == {my_payment["id"]}
    assert await ids("/v1/payments", manager_key) == {my_payment["id"]}
    assert await ids("/v1/payments", viewer_key) == {my_payment["id"], their_payment["id"]}
    my_inst = {i["id"] for i in my_order["installments"]}
    assert await ids("/v1/installments", rep_key) == my_inst
    for path in (
        f"/v1/orders/{their_order['id']}",
        f"/v1/payments/{their_payment['id']}",
        f"/v1/installments/{their_order['installments'][0]['id']}",
        f"/v1/installments/{their_order['installments'][0]['id']}/dunning",
    ):
        assert (await org.client.get(path, headers=org.auth(rep_key))).status_code == 404, path
        assert (await org.client.get(path, headers=org.auth(org.admin_key))).status_code == 200, path
    # A rep cannot record a payment or an order for an account they cannot see.
    r = await org.client.post(
        "/v1/payments",
        json={"account_id": theirs["id"], "amount": "1.00", "currency": "CNY", "received_at": "2026-11-01"},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 404
    # Viewers read but change nothing.
    r = await org.client.post(f"/v1/orders/{my_order['id']}/cancel", json={}, headers=org.auth(viewer_key))
    assert r.status_code == 403
    r = await org.client.post(
        f"/v1/installments/{my_order['installments'][0]['id']}/promise",
        json={"date": "2099-01-01"},
        headers=org.auth(viewer_key),
    )
    assert r.status_code == 403
    # A manager confirms only with the finance flag; a finance rep confirms.
    assert (
        await org.client.post(f"/v1/payments/{my_payment['id']}/confirm", headers=org.auth(manager_key))
    ).status_code == 403
    assert (
        await org.client.post(f"/v1/payments/{my_payment['id']}/confirm", headers=org.auth(finance_key))
    ).status_code == 200


async def test_another_organisations_receivables_are_404(org: Org, other_org: Org) -> None:
    account = await make_account(org)
    order = await make_order(org, account["id"])
    payment = await pay(org, account["id"], "10.00", received_at="2026-11-01")
    inst = order["installments"][0]["id"]
    o = other_org.client
    h = other_org.auth()
    for method, path, body in (
        ("GET", f"/v1/orders/{order['id']}", None),
        ("POST", f"/v1/orders/{order['id']}/cancel", {}),
        ("GET", f"/v1/installments/{inst}", None),
        ("POST", f"/v1/installments/{inst}/reschedule", {"due_date": "2099-01-01"}),
        ("POST", f"/v1/installments/{inst}/promise", {"date": "2099-01-01"}),
        ("GET", f"/v1/installments/{inst}/dunning", None),
        ("GET", f"/v1/payments/{payment['id']}", None),
        ("POST", f"/v1/payments/{payment['id']}/confirm", None),
        ("POST", f"/v1/payments/{payment['id']}/reject", {}),
        ("POST", f"/v1/payments/{payment['id']}/reverse", {"reason": "x"}),
        ("GET", f"/v1/accounts/{account['id']}/credit", None),
        ("GET", f"/v1/accounts/{account['id']}/credit/balance", None),
        ("POST", f"/v1/accounts/{account['id']}/credit/apply", {}),
    ):
        r = await o.request(method, path, json=body, headers=h)
        assert r.status_code == 404, (method, path, r.text)
    for path in ("/v1/orders", "/v1/payments", "/v1/installments", "/v1/outbound-messages"):
        assert (await o.get(path, headers=h)).json()["data"] == [], path
    aging = (await o.get("/v1/receivables/aging", headers=h)).json()
    assert aging["rows"] == [] and aging["totals"] == []
    assert (await org.client.get(f"/v1/payments/{payment['id']}", headers=org.auth())).json()[
        "status"
    ] == "pending_confirmation"
