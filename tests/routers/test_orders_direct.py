"""Direct orders: quote math, terms by days or dates, past order dates, cancel, reschedule, split."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from app.state import AppState
from tests.conftest import Org
from tests.factories import events, make_account, make_order


async def test_direct_order_priced_with_the_quote_math_and_terms_by_days_or_dates(
    org: Org, state: AppState
) -> None:
    account = await make_account(org)
    body = {
        "account_id": account["id"],
        "currency": "CNY",
        "lines": [
            {"description": "Seats", "quantity": "3", "unit_price": "333.33", "tax_rate": "13"},
            {"description": "Setup", "quantity": "1", "unit_price": "100.00", "discount_percent": "10"},
        ],
        "payment_terms": [
            {"percent": "33.33", "due_days": 0},
            {"percent": "66.67", "due_date": "2026-12-31"},
        ],
        "ordered_at": "2026-11-01",
    }
    r = await org.client.post("/v1/orders", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    order = r.json()
    # 3 × 333.33 = 999.99, tax 13% = 130.00 (129.9987 half-up) -> 1129.99; setup 100 - 10 = 90.00
    assert order["total"] == "1219.99"
    assert order["deal_id"] is None and order["quote_id"] is None
    assert order["ordered_at"].startswith("2026-11-01")
    first, second = order["installments"]
    assert (first["amount"], first["due_date"]) == ("406.62", "2026-11-01")  # 33.33% of 1219.99 = 406.6227
    assert (second["amount"], second["due_date"]) == ("813.37", "2026-12-31")  # the remainder
    assert first["status"] == "overdue" and second["status"] == "scheduled"  # Nov 1 lies in the past
    overdue = await events(state, org, "installment.overdue")
    assert [e["installment_id"] for e in overdue] == [first["id"]]


async def test_direct_order_bad_input(org: Org, other_org: Org) -> None:
    account = await make_account(org)
    base = {
        "account_id": account["id"],
        "currency": "CNY",
        "lines": [{"description": "x", "quantity": "1", "unit_price": "10.00"}],
        "payment_terms": [{"percent": "100", "due_days": 0}],
    }
    cases: list[tuple[dict[str, Any], int]] = [
        ({"payment_terms": [{"percent": "50", "due_days": 0}]}, 422),
        ({"payment_terms": [{"percent": "100"}]}, 422),
        ({"payment_terms": [{"percent": "100", "due_days": 1, "due_date": "2030-01-01"}]}, 422),
        ({"ordered_at": (date.today() + timedelta(days=5)).isoformat()}, 422),
        ({"lines": [{"description": "x", "quantity": "1", "unit_price": "10.001"}]}, 422),
        ({"lines": [{"description": "x", "quantity": "1", "unit_price": "0"}]}, 422),
        ({"currency": "cny"}, 422),
    ]
    for change, expected in cases:
        r = await org.client.post("/v1/orders", json=base | change, headers=org.auth())
        assert r.status_code == expected, (change, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    foreign = await make_account(other_org)
    r = await org.client.post("/v1/orders", json=base | {"account_id": foreign["id"]}, headers=org.auth())
    assert r.status_code == 404
    r = await org.client.get("/v1/orders", headers=org.auth())
    assert r.json()["data"] == []


async def test_cancel_writes_off_open_installments_dated_and_audited(org: Org) -> None:
    account = await make_account(org)
    order = await make_order(org, account["id"], ordered_at="2026-10-01")
    await org.client.patch(
        "/v1/organisation", json={"settings": {"payment_confirmation_required": False}}, headers=org.auth()
    )
    r = await org.client.post(
        "/v1/payments",
        json={
            "account_id": account["id"],
            "amount": "3500.00",
            "currency": "CNY",
            "received_at": "2026-10-05",
        },
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    r = await org.client.post(
        f"/v1/orders/{order['id']}/cancel",
        json={"reason": "customer went bankrupt", "effective_on": "2026-11-02"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_on"] == "2026-11-02"
    first, second = cancelled["installments"]
    assert (first["status"], first["paid_amount"], first["written_off_amount"]) == ("paid", "3000.00", "0.00")
    assert (second["status"], second["paid_amount"], second["written_off_amount"], second["open_amount"]) == (
        "written_off",
        "500.00",
        "6500.00",
        "0.00",
    )
    assert second["written_off_on"] == "2026-11-02"
    r = await org.client.post(f"/v1/orders/{order['id']}/cancel", json={}, headers=org.auth())
    assert r.status_code == 409
    audit = (
        await org.client.get(f"/v1/audit-log?entity=order&entity_id={order['id']}", headers=org.auth())
    ).json()
    actions = {e["action"]: e for e in audit["data"]}
    assert actions["cancel"]["actor_user_id"] == org.admin_id
    assert actions["cancel"]["changes"]["written_off"][1] == {second["id"]: "6500.00"}


async def test_reschedule_and_split_keep_the_total_and_the_history(org: Org) -> None:
    account = await make_account(org)
    order = await make_order(org, account["id"])
    first, second = order["installments"]
    later = (date.today() + timedelta(days=60)).isoformat()
    r = await org.client.post(
        f"/v1/installments/{second['id']}/reschedule", json={"due_date": later}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    assert r.json()[0]["due_date"] == later
    d1, d2 = (date.today() + timedelta(days=40)).isoformat(), (date.today() + timedelta(days=80)).isoformat()
    bad = await org.client.post(
        f"/v1/installments/{second['id']}/reschedule",
        json={"parts": [{"amount": "3000.00", "due_date": d1}, {"amount": "3000.00", "due_date": d2}]},
        headers=org.auth(),
    )
    assert bad.status_code == 422  # 6,000 is not 7,000
    r = await org.client.post(
        f"/v1/installments/{second['id']}/reschedule",
        json={
            "parts": [{"amount": "3000.00", "due_date": d1}, {"amount": "4000.00", "due_date": d2}],
            "reason": "cash flow",
        },
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    plan = (await org.client.get(f"/v1/orders/{order['id']}", headers=org.auth())).json()
    assert [(i["sequence"], i["amount"], i["due_date"]) for i in plan["installments"]] == [
        (1, "3000.00", first["due_date"]),
        (2, "3000.00", d1),
        (3, "4000.00", d2),
    ]
    assert sum(float(i["amount"]) for i in plan["installments"]) == 10000.0
    audit = (
        await org.client.get(f"/v1/audit-log?entity=installment&entity_id={second['id']}", headers=org.auth())
    ).json()
    assert {e["action"] for e in audit["data"]} == {"reschedule", "split"}
