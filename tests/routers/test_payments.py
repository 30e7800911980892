"""Payments (回款): allocation oldest due first, credit, confirmation, rejection, reversal, bad input."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from app.state import AppState
from tests.conftest import Org
from tests.factories import confirm, events, installments, make_account, make_order, pay, set_settings


async def _credit(org: Org, account_id: str) -> list[dict[str, Any]]:
    r = await org.client.get(f"/v1/accounts/{account_id}/credit/balance", headers=org.auth())
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_acceptance_1_allocation_oldest_first_credit_and_applying_it(org: Org, state: AppState) -> None:
    account = await make_account(org)
    # Dated from today, so the second installment (due in 30 days) is not yet overdue.
    ordered = date.today() - timedelta(days=20)
    order = await make_order(org, account["id"], total="10000.00", ordered_at=ordered.isoformat())
    p1 = await pay(org, account["id"], "5000.00", received_at=(ordered + timedelta(days=9)).isoformat())
    assert p1["status"] == "pending_confirmation" and p1["allocations"] == []
    p1 = await confirm(org, p1["id"])
    assert [(a["installment_id"], a["amount"]) for a in p1["allocations"]] == [
        (order["installments"][0]["id"], "3000.00"),
        (order["installments"][1]["id"], "2000.00"),
    ]
    first, second = await installments(org, order["id"])
    assert (first["status"], first["paid_amount"]) == ("paid", "3000.00")
    assert (second["status"], second["paid_amount"], second["open_amount"]) == (
        "partially_paid",
        "2000.00",
        "5000.00",
    )

    p2 = await confirm(
        org,
        (await pay(org, account["id"], "6000.00", received_at=(ordered + timedelta(days=11)).isoformat()))[
            "id"
        ],
    )
    assert p2["unallocated"] == "1000.00"
    first, second = await installments(org, order["id"])
    assert (second["status"], second["paid_amount"]) == ("paid", "7000.00")
    assert await _credit(org, account["id"]) == [{"currency": "CNY", "amount": "1000.00"}]
    assert (await org.client.get(f"/v1/orders/{order['id']}", headers=org.auth())).json()[
        "status"
    ] == "completed"

    new = await make_order(org, account["id"], total="5000.00")
    r = await org.client.post(
        f"/v1/accounts/{account['id']}/credit/apply",
        json={"allocations": [{"installment_id": new["installments"][0]["id"], "amount": "1000.00"}]},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["credit"] == []
    assert [a["source"] for a in r.json()["allocations"]] == ["credit"]
    assert await _credit(org, account["id"]) == []
    first_new = (await installments(org, new["id"]))[0]
    assert (first_new["paid_amount"], first_new["open_amount"]) == ("1000.00", "500.00")
    r = await org.client.post(f"/v1/accounts/{account['id']}/credit/apply", json={}, headers=org.auth())
    assert r.status_code == 409  # nothing left

    assert len(await events(state, org, "payment.received")) == 2
    assert len(await events(state, org, "payment.confirmed")) == 2
    paid = await events(state, org, "installment.paid")
    assert {e["installment_id"] for e in paid} == {i["id"] for i in order["installments"]}


async def test_acceptance_4_unconfirmed_changes_nothing_rep_cannot_confirm_reversal_restores(
    org: Org, state: AppState
) -> None:
    rep_id, rep_key = await org.add_user("rep")
    finance_id, finance_key = await org.add_user("rep", finance=True)
    account = await make_account(org, owner_id=rep_id)
    order = await make_order(org, account["id"], ordered_at="2026-11-01")
    payment = await pay(org, account["id"], "4000.00", received_at="2026-11-05", key=rep_key)
    assert all(i["paid_amount"] == "0.00" for i in await installments(org, order["id"]))
    assert await _credit(org, account["id"]) == []

    r = await org.client.post(f"/v1/payments/{payment['id']}/confirm", headers=org.auth(rep_key))
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    confirmed = await confirm(org, payment["id"], key=finance_key)
    assert confirmed["confirmed_by_id"] == finance_id
    assert [i["paid_amount"] for i in await installments(org, order["id"])] == ["3000.00", "1000.00"]

    r = await org.client.post(
        f"/v1/payments/{payment['id']}/reverse",
        json={"reason": "cheque bounced", "reversed_on": "2026-11-20"},
        headers=org.auth(finance_key),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["reversed_on"], r.json()["reversed_by_id"]) == (
        "reversed",
        "2026-11-20",
        finance_id,
    )
    restored = await installments(org, order["id"])
    assert [i["paid_amount"] for i in restored] == ["0.00", "0.00"]
    assert restored[0]["status"] == "overdue"  # due 2026-11-01, unpaid again
    audit = (
        await org.client.get(f"/v1/audit-log?entity=payment&entity_id={payment['id']}", headers=org.auth())
    ).json()
    by_action = {e["action"]: e for e in audit["data"]}
    assert by_action["reverse"]["actor_user_id"] == finance_id
    assert by_action["reverse"]["changes"]["reason"] == [None, "cheque bounced"]
    assert by_action["confirm"]["actor_user_id"] == finance_id
    assert by_action["create"]["actor_user_id"] == rep_id
    assert [e["payment_id"] for e in await events(state, org, "payment.reversed")] == [payment["id"]]

    # A rejected payment never counts; viewers cannot record or confirm.
    second = await pay(org, account["id"], "100.00", received_at="2026-11-21")
    r = await org.client.post(
        f"/v1/payments/{second['id']}/reject", json={"reason": "duplicate"}, headers=org.auth(finance_key)
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = await org.client.post(f"/v1/payments/{second['id']}/confirm", headers=org.auth())
    assert r.status_code == 409
    _, viewer_key = await org.add_user("viewer", finance=True)
    r = await org.client.post(
        "/v1/payments",
        json={"account_id": account["id"], "amount": "1.00", "currency": "CNY", "received_at": "2026-11-21"},
        headers=org.auth(viewer_key),
    )
    assert r.status_code == 403


async def test_acceptance_6_bad_input_answers_4xx_and_changes_nothing(org: Org, other_org: Org) -> None:
    account = await make_account(org)
    order = await make_order(org, account["id"], ordered_at="2026-11-01")
    first, second = order["installments"]
    foreign_account = await make_account(other_org)
    foreign_order = await make_order(other_org, foreign_account["id"])
    base = {"account_id": account["id"], "currency": "CNY", "received_at": "2026-11-05"}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"amount": "0"}, 422),
        ({"amount": "-5.00"}, 422),
        ({"amount": "1.001"}, 422),
        ({"amount": "abc"}, 422),
        ({"amount": "100.00", "method": "barter"}, 422),
        ({"amount": "100.00", "received_at": "2099-01-01"}, 422),
        # allocations above the payment
        ({"amount": "100.00", "allocations": [{"installment_id": first["id"], "amount": "150.00"}]}, 422),
        # above the installment's open amount
        ({"amount": "5000.00", "allocations": [{"installment_id": first["id"], "amount": "3000.01"}]}, 422),
        # another organisation's installment
        (
            {
                "amount": "100.00",
                "allocations": [
                    {"installment_id": foreign_order["installments"][0]["id"], "amount": "100.00"}
                ],
            },
            422,
        ),
        # another currency without a rate
        ({"amount": "100.00", "currency": "USD"}, 422),
        (
            {
                "amount": "100.00",
                "currency": "USD",
                "allocations": [{"installment_id": second["id"], "amount": "100.00"}],
            },
            422,
        ),
        ({"amount": "100.00", "account_id": foreign_account["id"]}, 404),
    ]
    for change, expected in cases:
        r = await org.client.post("/v1/payments", json=base | change, headers=org.auth())
        assert r.status_code == expected, (change, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), change
        assert r.json()["status"] == expected
    assert (await org.client.get("/v1/payments", headers=org.auth())).json()["data"] == []

    pending = await pay(org, account["id"], "100.00", received_at="2026-11-05")
    r = await org.client.post(
        f"/v1/payments/{pending['id']}/reverse", json={"reason": "x"}, headers=org.auth()
    )
    assert r.status_code == 409  # a reversal of an unconfirmed payment
    r = await org.client.post(f"/v1/payments/{pending['id']}/reverse", json={}, headers=org.auth())
    assert r.status_code == 422  # a reason is required
    assert (await org.client.get(f"/v1/payments/{pending['id']}", headers=org.auth())).json()[
        "status"
    ] == "pending_confirmation"
    assert all(i["paid_amount"] == "0.00" for i in await installments(org, order["id"]))
    r = await other_org.client.get(f"/v1/payments/{pending['id']}", headers=other_org.auth())
    assert r.status_code == 404


async def test_other_currency_with_a_rate_keeps_the_rate_on_the_allocation(org: Org) -> None:
    await set_settings(org, payment_confirmation_required=False)
    account = await make_account(org)
    order = await make_order(org, account["id"], total="1000.00", terms=[{"percent": "100", "due_days": 10}])
    payment = await pay(
        org, account["id"], "100.00", currency="USD", received_at="2026-11-05", exchange_rate="7.1234"
    )
    assert payment["status"] == "confirmed"
    (alloc,) = payment["allocations"]
    assert (alloc["amount"], alloc["applied_amount"], alloc["exchange_rate"]) == (
        "100.00",
        "712.34",
        "7.1234",
    )
    assert (await installments(org, order["id"]))[0]["paid_amount"] == "712.34"
    # More than is open: the applied part is capped and the rest stays as USD credit.
    payment = await pay(
        org, account["id"], "100.00", currency="USD", received_at="2026-11-06", exchange_rate="7.1234"
    )
    assert payment["allocations"][0]["applied_amount"] == "287.66"
    assert payment["unallocated"] == "59.62"  # 100 - 287.66 / 7.1234 (40.38)


async def test_dates_out_of_range_and_credit_misuse_answer_4xx(org: Org, other_org: Org) -> None:
    account = await make_account(org)
    order = await make_order(org, account["id"], ordered_at="2026-11-01")
    inst = order["installments"][0]["id"]
    for path, body in (
        (
            "/v1/payments",
            {"account_id": account["id"], "amount": "1.00", "currency": "CNY", "received_at": "0001-01-01"},
        ),
        (
            "/v1/orders",
            {
                "account_id": account["id"],
                "currency": "CNY",
                "ordered_at": "0001-01-01",
                "lines": [{"description": "x", "quantity": "1", "unit_price": "1.00"}],
                "payment_terms": [{"percent": "100", "due_days": 0}],
            },
        ),
        (f"/v1/installments/{inst}/reschedule", {"due_date": "9999-12-31"}),
        (f"/v1/installments/{inst}/promise", {"date": "9999-12-31"}),
    ):
        r = await org.client.post(path, json=body, headers=org.auth())
        assert r.status_code == 422, (path, r.text)
    for query in (
        "/v1/receivables/aging?as_of=9999-12-31",
        "/v1/metrics/collections?from=9999-12-01&to=9999-12-31",
    ):
        assert (await org.client.get(query, headers=org.auth())).status_code == 422, query
    assert (await org.client.post("/v1/dunning/run?as_of=9999-12-31", headers=org.auth())).status_code == 422
    # Credit: none to apply; named beyond it; another organisation's installment.
    r = await org.client.post(f"/v1/accounts/{account['id']}/credit/apply", json={}, headers=org.auth())
    assert r.status_code == 409
    await set_settings(org, payment_confirmation_required=False)
    await pay(org, account["id"], "12000.00", received_at="2026-11-02")  # 10,000 allocated, 2,000 credit
    other = await make_order(org, account["id"], total="5000.00")
    r = await org.client.post(
        f"/v1/accounts/{account['id']}/credit/apply",
        json={"allocations": [{"installment_id": other["installments"][0]["id"], "amount": "1500.01"}]},
        headers=org.auth(),
    )
    assert r.status_code == 409  # more than the installment's 1,500.00 open
    foreign = await make_order(other_org, (await make_account(other_org))["id"])
    r = await org.client.post(
        f"/v1/accounts/{account['id']}/credit/apply",
        json={"allocations": [{"installment_id": foreign["installments"][0]["id"], "amount": "1.00"}]},
        headers=org.auth(),
    )
    assert r.status_code == 422
    assert (
        await org.client.get(f"/v1/accounts/{account['id']}/credit/balance", headers=org.auth())
    ).json() == [{"currency": "CNY", "amount": "2000.00"}]


async def test_a_payment_posted_twice_with_one_idempotency_key_is_recorded_once(org: Org) -> None:
    account = await make_account(org)
    body = {"account_id": account["id"], "amount": "10.00", "currency": "CNY", "received_at": "2026-11-01"}
    headers = {**org.auth(), "Idempotency-Key": "bank-statement-line-42"}
    first = await org.client.post("/v1/payments", json=body, headers=headers)
    second = await org.client.post("/v1/payments", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert len((await org.client.get("/v1/payments", headers=org.auth())).json()["data"]) == 1


async def test_only_an_admin_grants_the_finance_permission(org: Org) -> None:
    rep_id, rep_key = await org.add_user("rep")
    account = await make_account(org, owner_id=rep_id)
    payment = await pay(org, account["id"], "10.00", received_at="2026-11-01", key=rep_key)
    r = await org.client.patch(f"/v1/users/{rep_id}", json={"finance": True}, headers=org.auth(rep_key))
    assert r.status_code == 403
    r = await org.client.patch(f"/v1/users/{rep_id}", json={"finance": True}, headers=org.auth())
    assert r.status_code == 200 and r.json()["finance"] is True
    r = await org.client.post(f"/v1/payments/{payment['id']}/confirm", headers=org.auth(rep_key))
    assert r.status_code == 200 and r.json()["confirmed_by_id"] == rep_id
