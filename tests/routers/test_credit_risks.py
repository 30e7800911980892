"""Acceptance 5: the credit rating and the risks come with their reasons; exposure over the
limit makes accepting a quote answer 409, and a manager's override is recorded."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from app.services.receivables import risks
from app.state import AppState
from tests.conftest import Org
from tests.factories import confirm, events, make_account, make_deal, make_order, pay, set_settings


async def _sent_quote(org: Org, deal_id: str, amount: str, key: str | None = None) -> dict[str, Any]:
    body = {"deal_id": deal_id, "lines": [{"description": "Licence", "quantity": "1", "unit_price": amount}]}
    r = await org.client.post("/v1/quotes", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    quote = r.json()
    for step in ("submit", "send"):
        r = await org.client.post(f"/v1/quotes/{quote['id']}/{step}", headers=org.auth(key))
        assert r.status_code == 200, r.text
    return dict(r.json())


async def test_exposure_over_the_limit_refuses_acceptance_unless_a_manager_overrides(org: Org) -> None:
    await set_settings(org, base_currency="CNY")
    team = (await org.client.post("/v1/teams", json={"name": "North"}, headers=org.auth())).json()
    manager_id, manager_key = await org.add_user("manager", team_id=team["id"])
    rep_id, rep_key = await org.add_user("rep", team_id=team["id"])
    account = await make_account(org, owner_id=rep_id, credit_limit="10000", credit_currency="CNY")
    await make_order(org, account["id"], total="5000.00")  # open installments: 5,000
    deal = await make_deal(org, rep_key, currency="CNY", account_id=account["id"])
    quote = await _sent_quote(org, deal["id"], "4000.00", rep_key)
    credit = (await org.client.get(f"/v1/accounts/{account['id']}/credit", headers=org.auth(rep_key))).json()
    assert credit["exposure"]["open_installments"] == "5000.00"
    assert credit["exposure"]["open_quotes"] == "4000.00"
    assert credit["exposure"]["total"] == "9000.00" and credit["available"] == "1000.00"

    second = await _sent_quote(org, deal["id"], "2000.00", rep_key)  # 11,000 with both quotes
    r = await org.client.post(f"/v1/quotes/{quote['id']}/accept", headers=org.auth(rep_key))
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "credit limit" in r.json()["detail"]
    r = await org.client.post(
        f"/v1/quotes/{quote['id']}/accept",
        json={"credit_override_reason": "I say so"},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 403
    assert (await org.client.get(f"/v1/quotes/{quote['id']}", headers=org.auth())).json()["status"] == "sent"
    r = await org.client.post(
        f"/v1/quotes/{quote['id']}/accept",
        json={"credit_override_reason": "Strategic customer, CFO approved"},
        headers=org.auth(manager_key),
    )
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["credit_override_reason"] == "Strategic customer, CFO approved"
    audit = (
        await org.client.get(f"/v1/audit-log?entity=order&entity_id={order['id']}", headers=org.auth())
    ).json()["data"]
    override = next(e for e in audit if e["action"] == "credit_override")
    assert override["actor_user_id"] == manager_id
    # Declining the other quote brings the exposure back under the limit: no refusal then.
    await org.client.post(
        f"/v1/quotes/{second['id']}/decline", json={"reason": "no"}, headers=org.auth(rep_key)
    )
    after = (await org.client.get(f"/v1/accounts/{account['id']}/credit", headers=org.auth())).json()
    assert after["exposure"]["total"] == "9000.00"


async def test_rating_and_risks_carry_their_reasons_and_raise_events_once(org: Org, state: AppState) -> None:
    await set_settings(org, base_currency="CNY", risk_overdue_amount="1000", risk_overdue_days=30)
    account = await make_account(org, name="Slow Payer", credit_limit="20000", credit_currency="CNY")
    long_ago = date.today() - timedelta(days=120)
    old = await make_order(
        org,
        account["id"],
        total="4000.00",
        ordered_at=str(long_ago),
        terms=[{"percent": "50", "due_days": 0}, {"percent": "50", "due_days": 10}],
    )
    # The first installment was paid 20 days late, the second on time.
    p = await pay(org, account["id"], "2000.00", received_at=str(long_ago + timedelta(days=20)))
    await confirm(org, p["id"])
    p = await pay(org, account["id"], "2000.00", received_at=str(long_ago + timedelta(days=5)))
    await confirm(org, p["id"])
    assert all(
        i["status"] == "paid"
        for i in (await org.client.get(f"/v1/orders/{old['id']}", headers=org.auth())).json()["installments"]
    )

    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        await risks.raise_risks(session, session.info["org_id"], today=date.today())
        await session.commit()
    first = (await org.client.get(f"/v1/accounts/{account['id']}/credit", headers=org.auth())).json()
    factors = {f["name"]: f for f in first["factors"]}
    assert set(factors) == {"on_time_share", "mean_days_late", "current_overdue", "utilisation"}
    assert Decimal(str(factors["on_time_share"]["value"])) == Decimal("0.5")
    assert "1 of 2 paid installments" in factors["on_time_share"]["explanation"]
    assert Decimal(factors["mean_days_late"]["value"]) == Decimal("10")  # (20 + 0) / 2
    assert sum(f["weight"] for f in first["factors"]) == 100
    assert first["weights"] == {
        "on_time_share": 40,
        "mean_days_late": 20,
        "current_overdue": 25,
        "utilisation": 15,
    }
    # 50×0.4 + (100 − 10×100/90)×0.2 + 100×0.25 + 100×0.15 = 20 + 17.78 + 25 + 15 = 77.78 -> B
    assert (first["score"], first["rating"]) == ("77.78", "B")
    assert first["stored_rating"] == "B"

    # Now an installment 45 days overdue, with a promise that was missed.
    late = await make_order(
        org,
        account["id"],
        total="3000.00",
        ordered_at=str(date.today() - timedelta(days=50)),
        terms=[{"percent": "100", "due_days": 5}],
    )
    (inst,) = late["installments"]
    async with state.sessions() as session:
        await session.execute(
            text("UPDATE installments SET promise_date = :d, promise_made_on = :m WHERE id = :id"),
            {"d": date.today() - timedelta(days=2), "m": date.today() - timedelta(days=9), "id": inst["id"]},
        )
        await session.commit()
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        await risks.raise_risks(session, session.info["org_id"], today=date.today())
        await risks.raise_risks(session, session.info["org_id"], today=date.today())  # twice: events once
        await session.commit()
    listed = (await org.client.get("/v1/receivables/risks", headers=org.auth())).json()
    assert listed["settings"]["risk_overdue_days"] == 30
    by_subject = {(r["subject"], r["subject_id"]): r for r in listed["data"]}
    inst_risk = by_subject[("installment", inst["id"])]
    assert {x["code"] for x in inst_risk["reasons"]} == {"overdue_days", "promise_missed"}
    assert inst_risk["days_past_due"] == 45 and inst_risk["open_amount"] == "3000.00"
    account_risk = by_subject[("account", account["id"])]
    assert {x["code"] for x in account_risk["reasons"]} == {"overdue_amount", "rating_dropped"}
    assert "from B to" in next(x["detail"] for x in account_risk["reasons"] if x["code"] == "rating_dropped")
    raised = [
        e for e in await events(state, org, "risk.raised") if e["subject_id"] in (inst["id"], account["id"])
    ]
    assert sorted((e["subject"], e["reason"]) for e in raised) == [
        ("account", "overdue_amount"),
        ("account", "rating_dropped"),
        ("installment", "overdue_days"),
        ("installment", "promise_missed"),
    ]
    now = (await org.client.get(f"/v1/accounts/{account['id']}/credit", headers=org.auth())).json()
    assert now["previous_rating"] == "B" and now["rating"] in ("C", "D")
    overdue = next(f for f in now["factors"] if f["name"] == "current_overdue")
    assert overdue["value"] == "3000.00" and "3000.00 CNY overdue" in overdue["explanation"]


async def test_credit_and_risks_isolation_and_roles(org: Org, other_org: Org) -> None:
    rep_id, rep_key = await org.add_user("rep")
    _, other_rep_key = await org.add_user("rep")
    account = await make_account(org, owner_id=rep_id)
    order = await make_order(
        org,
        account["id"],
        ordered_at=str(date.today() - timedelta(days=60)),
        terms=[{"percent": "100", "due_days": 0}],
    )
    assert (
        await org.client.get(f"/v1/accounts/{account['id']}/credit", headers=org.auth(rep_key))
    ).status_code == 200
    assert (
        await org.client.get(f"/v1/accounts/{account['id']}/credit", headers=org.auth(other_rep_key))
    ).status_code == 404
    assert (
        await other_org.client.get(f"/v1/accounts/{account['id']}/credit", headers=other_org.auth())
    ).status_code == 404
    mine = (await org.client.get("/v1/receivables/risks", headers=org.auth(rep_key))).json()["data"]
    assert [r["subject_id"] for r in mine] == [order["installments"][0]["id"]]
    assert (await org.client.get("/v1/receivables/risks", headers=org.auth(other_rep_key))).json()[
        "data"
    ] == []
    assert (await other_org.client.get("/v1/receivables/risks", headers=other_org.auth())).json()[
        "data"
    ] == []
