"""Dunning without SMTP (webhook hand-off), promise-to-pay windows, catch-up, per-account
policies, the collections sweep, bad input, isolation and roles."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from app.state import AppState
from app.workers.receivables import collections_sweep
from tests.conftest import Org
from tests.factories import events, make_account, make_order

STEPS = [
    {"offset_days": -3, "action": "email"},
    {
        "offset_days": 1,
        "action": "email",
        "language": "en",
        "subject_template": "Hi {customer}: {amount} {currency}",
    },
    {"offset_days": 15, "action": "owner_task"},
    {"offset_days": 30, "action": "legal_notice"},
]


async def _policy(org: Org, steps: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    body = {"name": "Default", "is_default": True, "steps": steps or STEPS, **fields}
    r = await org.client.post("/v1/dunning-policies", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _run(org: Org, day: date, key: str | None = None) -> dict[str, Any]:
    r = await org.client.post(f"/v1/dunning/run?as_of={day}", headers=org.auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _log(org: Org, installment_id: str) -> list[tuple[int, str, str | None]]:
    r = await org.client.get(f"/v1/installments/{installment_id}/dunning", headers=org.auth())
    assert r.status_code == 200, r.text
    return [(e["offset_days"], e["outcome"], e["reason"]) for e in r.json()]


async def test_without_smtp_messages_are_handed_off_as_webhook_events(org: Org, state: AppState) -> None:
    await _policy(org)
    account = await make_account(org, name="客户甲", billing_email="pay@jia.example")
    # Every step lies in the future, so the worker's own sweep (as of today) claims none of them.
    day0 = date.today()
    order = await make_order(org, account["id"], terms=[{"percent": "100", "due_days": 5}])
    (inst,) = order["installments"]
    for day in range(0, 40):
        await _run(org, day0 + timedelta(days=day))
    assert await _log(org, inst["id"]) == [
        (-3, "fired", None),
        (1, "fired", None),
        (15, "fired", None),
        (30, "fired", None),
    ]
    messages = (await org.client.get("/v1/outbound-messages", headers=org.auth())).json()["data"]
    assert {(m["transport"], m["state"]) for m in messages} == {("webhook", "handed_off")}
    by_lang = {m["language"]: m for m in messages}
    assert "付款提醒" in by_lang["zh"]["subject"]  # the organisation's default language
    assert by_lang["en"]["subject"] == "Hi 客户甲: 10000.00 CNY"
    handed = await events(state, org, "dunning.message")
    assert sorted(e["message_id"] for e in handed) == sorted(m["id"] for m in messages)
    assert all(e["to"] == "pay@jia.example" for e in handed)
    account_now = (await org.client.get(f"/v1/accounts/{account['id']}", headers=org.auth())).json()
    assert account_now["legal_notice"] is True and account_now["legal_notice_at"]


async def test_promise_window_skips_and_late_entry_sends_only_the_latest_step(org: Org) -> None:
    await _policy(org)
    account = await make_account(org, billing_email="ap@x.example")
    day0 = date.today() - timedelta(days=20)
    order = await make_order(
        org, account["id"], ordered_at=str(day0), terms=[{"percent": "100", "due_days": 2}]
    )
    (inst,) = order["installments"]
    # Nothing ran for 20 days: the first run sends only the latest due step (+15), once.
    await _run(org, date.today())
    assert await _log(org, inst["id"]) == [
        (-3, "skipped", "superseded"),
        (1, "skipped", "superseded"),
        (15, "fired", None),
    ]

    other = await make_order(org, account["id"], terms=[{"percent": "100", "due_days": 2}])
    (fresh,) = other["installments"]
    promise = (date.today() + timedelta(days=10)).isoformat()
    r = await org.client.post(
        f"/v1/installments/{fresh['id']}/promise",
        json={"date": promise, "amount": "100.00", "note": "CFO said"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["promise_date"] == promise
    for day in range(0, 12):
        await _run(org, date.today() + timedelta(days=day))
    # -3 (yesterday, before the promise was made) fires on the first run; +1 falls inside the window.
    assert await _log(org, fresh["id"]) == [(-3, "fired", None), (1, "skipped", "promise_to_pay")]
    bad = await org.client.post(
        f"/v1/installments/{fresh['id']}/promise", json={"date": "2020-01-01"}, headers=org.auth()
    )
    assert bad.status_code == 422


async def test_an_accounts_own_policy_wins_over_the_default(org: Org) -> None:
    await _policy(org)
    own = await _policy(org, steps=[{"offset_days": 0, "action": "owner_task"}], name="VIP", is_default=False)
    account = await make_account(org, dunning_policy_id=own["id"])
    order = await make_order(org, account["id"], terms=[{"percent": "100", "due_days": 0}])
    await _run(org, date.today())
    assert await _log(org, order["installments"][0]["id"]) == [(0, "fired", None)]
    policies = (await org.client.get("/v1/dunning-policies", headers=org.auth())).json()
    assert [p["is_default"] for p in policies] == [True, False]
    r = await org.client.post(
        "/v1/accounts",
        json={"name": "x", "dunning_policy_id": "00000000-0000-0000-0000-000000000001"},
        headers=org.auth(),
    )
    assert r.status_code == 422


async def test_the_sweep_marks_overdue_by_the_organisations_timezone_once(org: Org, state: AppState) -> None:
    account = await make_account(org)
    order = await make_order(
        org,
        account["id"],
        ordered_at=str(date.today() - timedelta(days=3)),
        terms=[{"percent": "50", "due_days": 0}, {"percent": "50", "due_days": 5}],
    )
    first, second = order["installments"]
    assert (first["status"], second["status"]) == ("overdue", "scheduled")  # exact at creation already
    # Move the second installment into the past as if days had gone by, then let the sweep find it.
    async with state.sessions() as session:
        from sqlalchemy import text

        await session.execute(
            text("UPDATE installments SET due_date = due_date - 5, status = 'scheduled' WHERE id = :id"),
            {"id": second["id"]},
        )
        await session.commit()
    ctx = {"state": state}
    await asyncio.gather(collections_sweep(ctx), collections_sweep(ctx))  # two workers' crons at once
    await collections_sweep(ctx)
    r = await org.client.get(f"/v1/installments/{second['id']}", headers=org.auth())
    assert r.json()["status"] == "overdue"
    overdue = [
        e for e in await events(state, org, "installment.overdue") if e["installment_id"] == second["id"]
    ]
    assert len(overdue) == 1


async def test_dunning_bad_input_roles_and_isolation(org: Org, other_org: Org) -> None:
    bad_bodies = [
        {"name": "x", "steps": []},
        {"name": "x", "steps": [{"offset_days": 1, "action": "fax"}]},
        {"name": "x", "steps": [{"offset_days": 1, "action": "email", "subject_template": "{nope}"}]},
        {"name": "x", "steps": [{"offset_days": 1, "action": "email", "body_template": "{customer"}]},
        {"name": "x", "steps": [{"offset_days": 99999, "action": "email"}]},
    ]
    for body in bad_bodies:
        r = await org.client.post("/v1/dunning-policies", json=body, headers=org.auth())
        assert r.status_code == 422, body
    policy = await _policy(org)
    _, rep_key = await org.add_user("rep")
    _, viewer_key = await org.add_user("viewer")
    assert (
        await org.client.post(
            "/v1/dunning-policies", json={"name": "r", "steps": STEPS}, headers=org.auth(rep_key)
        )
    ).status_code == 403
    assert (await org.client.post("/v1/dunning/run", headers=org.auth(viewer_key))).status_code == 403
    assert (await org.client.post("/v1/dunning/run", headers=org.auth(rep_key))).status_code == 403
    assert (await org.client.get("/v1/dunning-policies", headers=org.auth(viewer_key))).status_code == 200
    assert (await org.client.post("/v1/dunning/run?as_of=someday", headers=org.auth())).status_code == 422
    # Another organisation sees none of it.
    assert (
        await other_org.client.get(f"/v1/dunning-policies/{policy['id']}", headers=other_org.auth())
    ).status_code == 404
    r = await other_org.client.patch(
        f"/v1/dunning-policies/{policy['id']}", json={"name": "x"}, headers=other_org.auth()
    )
    assert r.status_code == 404
    assert (await other_org.client.get("/v1/dunning-policies", headers=other_org.auth())).json() == []
    account = await make_account(org, billing_email="a@b.example")
    order = await make_order(org, account["id"], terms=[{"percent": "100", "due_days": 3}])
    await _run(org, date.today())
    assert (await org.client.get("/v1/outbound-messages", headers=org.auth())).json()["data"]
    assert (await other_org.client.get("/v1/outbound-messages", headers=other_org.auth())).json()[
        "data"
    ] == []
    inst = order["installments"][0]["id"]
    assert (
        await other_org.client.get(f"/v1/installments/{inst}/dunning", headers=other_org.auth())
    ).status_code == 404
    # Replacing the steps retires the old ones: a second default switches the first off.
    r = await org.client.patch(
        f"/v1/dunning-policies/{policy['id']}",
        json={"steps": [{"offset_days": 5, "action": "email"}]},
        headers=org.auth(),
    )
    assert r.status_code == 200 and [s["offset_days"] for s in r.json()["steps"]] == [5]
    second = await _policy(org, name="Second")
    assert (await org.client.get(f"/v1/dunning-policies/{policy['id']}", headers=org.auth())).json()[
        "is_default"
    ] is False
    assert second["is_default"] is True


async def test_steps_on_the_same_day_all_fire(org: Org) -> None:
    await _policy(
        org,
        steps=[
            {"offset_days": 1, "action": "email"},
            {"offset_days": 1, "action": "owner_task"},
            {"offset_days": 1, "action": "legal_notice"},
        ],
    )
    account = await make_account(org, billing_email="ap@same-day.example")
    order = await make_order(org, account["id"], terms=[{"percent": "100", "due_days": 3}])
    result = await _run(org, date.today() + timedelta(days=4))
    assert (result["fired"], result["skipped"]) == (3, 0)
    assert sorted(await _log(org, order["installments"][0]["id"])) == [(1, "fired", None)] * 3
