"""Aging as of three dates equals an independent computation over the same installments,
payments, reversals and write-offs, per account, bucket and currency, in JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tests.conftest import Org
from tests.factories import confirm, make_account, make_order, pay, set_settings

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _bucket(days: int, edges: list[int]) -> str:
    if days <= 0:
        return "current"
    low = 1
    for edge in edges:
        if days <= edge:
            return f"{low}-{edge}"
        low = edge + 1
    return f"{edges[-1]}+"


def _expected(
    insts: dict[str, dict[str, Any]], allocations: list[dict[str, Any]], as_of: date, edges: list[int]
) -> dict[tuple[str, str], dict[str, Decimal]]:
    """{(account id or TOTAL, currency): {bucket: amount}} computed by hand from the inputs."""
    out: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for inst_id, i in insts.items():
        if i["ordered_on"] > as_of:
            continue
        paid = sum(
            (
                a["applied"]
                for a in allocations
                if a["installment_id"] == inst_id
                and a["status"] in ("confirmed", "reversed")
                and a["received_at"] <= as_of
                and (a["reversed_on"] is None or a["reversed_on"] > as_of)
            ),
            Decimal(0),
        )
        written_off = i["written_off"] if i["written_off_on"] and i["written_off_on"] <= as_of else Decimal(0)
        left = i["amount"] - paid - written_off
        if left <= 0:
            continue
        bucket = _bucket((as_of - i["due"]).days, edges)
        out[(i["account"], i["currency"])][bucket] += left
        out[("TOTAL", i["currency"])][bucket] += left
    return out


def _actual(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Decimal]]:
    out: dict[tuple[str, str], dict[str, Decimal]] = {}
    for row in report["rows"]:
        out[(row["group_id"], row["currency"])] = {
            k: Decimal(v) for k, v in row["buckets"].items() if Decimal(v)
        }
        assert Decimal(row["total"]) == sum(Decimal(v) for v in row["buckets"].values())
    for row in report["totals"]:
        out[("TOTAL", row["currency"])] = {k: Decimal(v) for k, v in row["buckets"].items() if Decimal(v)}
    return out


def _from_csv(text: str) -> dict[tuple[str, str], dict[str, Decimal]]:
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    names = header[4:-1]
    out = {}
    for r in rows[1:]:
        key = ("TOTAL" if r[0] == "TOTAL" else r[1], r[3])
        out[key] = {n: Decimal(v) for n, v in zip(names, r[4:-1], strict=True) if Decimal(v)}
    return out


async def test_acceptance_2_aging_as_of_three_dates_equals_an_independent_computation(org: Org) -> None:
    await set_settings(org, timezone="Asia/Shanghai")
    a = await make_account(org, name="Alpha")
    b = await make_account(org, name="Beta")
    orders = {
        "A1": await make_order(
            org,
            a["id"],
            total="10000.00",
            ordered_at="2026-06-01",
            terms=[{"percent": "30", "due_days": 0}, {"percent": "70", "due_days": 45}],
        ),
        "A2": await make_order(
            org,
            a["id"],
            total="2500.50",
            ordered_at="2026-08-15",
            terms=[{"percent": "50", "due_days": 10}, {"percent": "50", "due_days": 60}],
        ),
        "A3": await make_order(
            org, a["id"], total="3000.00", ordered_at="2026-07-01", terms=[{"percent": "100", "due_days": 30}]
        ),
        "B1": await make_order(
            org, b["id"], total="8000.00", ordered_at="2026-06-10", terms=[{"percent": "100", "due_days": 20}]
        ),
        "B2": await make_order(
            org,
            b["id"],
            total="1234.56",
            currency="USD",
            ordered_at="2026-10-01",
            terms=[{"percent": "40", "due_days": 0}, {"percent": "60", "due_date": "2026-10-31"}],
        ),
    }
    r = await org.client.post(
        f"/v1/orders/{orders['A3']['id']}/cancel", json={"effective_on": "2026-09-15"}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    orders["A3"] = r.json()
    _, a1b = orders["A1"]["installments"]
    a2 = orders["A2"]["installments"][0]

    await confirm(org, (await pay(org, a["id"], "3000.00", received_at="2026-06-05"))["id"])
    await confirm(org, (await pay(org, a["id"], "5000.00", received_at="2026-08-01"))["id"])
    p3 = await pay(
        org,
        a["id"],
        "2000.00",
        received_at="2026-09-20",
        allocations=[
            {"installment_id": a2["id"], "amount": "1250.25"},
            {"installment_id": a1b["id"], "amount": "749.75"},
        ],
    )
    await confirm(org, p3["id"])
    p4 = await pay(org, a["id"], "1000.00", received_at="2026-09-25")  # confirmed only after the reversal
    p5 = await pay(org, a["id"], "500.00", received_at="2026-09-26")
    r = await org.client.post(f"/v1/payments/{p5['id']}/reject", json={"reason": "test"}, headers=org.auth())
    assert r.status_code == 200
    r = await org.client.post(
        f"/v1/payments/{p3['id']}/reverse",
        json={"reason": "bounced", "reversed_on": "2026-10-05"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    await confirm(org, p4["id"])
    await confirm(org, (await pay(org, b["id"], "6000.00", received_at="2026-07-10"))["id"])
    await confirm(org, (await pay(org, b["id"], "600.00", currency="USD", received_at="2026-10-15"))["id"])
    await pay(org, b["id"], "999.00", received_at="2026-07-11")  # still pending: counts nowhere

    insts: dict[str, dict[str, Any]] = {}
    for order in orders.values():
        for i in order["installments"]:
            insts[i["id"]] = {
                "account": order["account_id"],
                "currency": i["currency"],
                "amount": Decimal(i["amount"]),
                "due": date.fromisoformat(i["due_date"]),
                "ordered_on": datetime.fromisoformat(order["ordered_at"]).astimezone(SHANGHAI).date(),
                "written_off": Decimal(i["written_off_amount"]),
                "written_off_on": date.fromisoformat(i["written_off_on"]) if i["written_off_on"] else None,
            }
    payments = (await org.client.get("/v1/payments?limit=100", headers=org.auth())).json()["data"]
    assert len(payments) == 8
    allocations = [
        {
            "installment_id": al["installment_id"],
            "applied": Decimal(al["applied_amount"]),
            "status": p["status"],
            "received_at": date.fromisoformat(p["received_at"]),
            "reversed_on": date.fromisoformat(p["reversed_on"]) if p["reversed_on"] else None,
        }
        for p in payments
        for al in p["allocations"]
    ]
    edges = [30, 60, 90]
    for as_of in (date(2026, 7, 20), date(2026, 9, 30), date(2026, 11, 25)):
        expected = _expected(insts, allocations, as_of, edges)
        expected = {k: {b: v for b, v in bk.items() if v} for k, bk in expected.items()}
        r = await org.client.get(f"/v1/receivables/aging?as_of={as_of}&group_by=account", headers=org.auth())
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["bucket_names"] == ["current", "1-30", "31-60", "61-90", "90+"]
        assert report["definition_version"] == 1 and report["filters"]["as_of"] == as_of.isoformat()
        assert _actual(report) == expected, as_of
        assert expected  # every date has something open
        r = await org.client.get(
            f"/v1/receivables/aging?as_of={as_of}&group_by=account&format=csv", headers=org.auth()
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert _from_csv(r.text) == expected
        r = await org.client.get(f"/v1/receivables/aging?as_of={as_of}&group_by=none", headers=org.auth())
        assert r.json()["rows"] == []
        assert _actual(r.json()) == {k: v for k, v in expected.items() if k[0] == "TOTAL"}

    # Bucket edges are an organisation setting.
    await set_settings(org, aging_bucket_edges=[15, 45])
    as_of = date(2026, 9, 30)
    expected = {
        k: {b: v for b, v in bk.items() if v}
        for k, bk in _expected(insts, allocations, as_of, [15, 45]).items()
    }
    r = await org.client.get(f"/v1/receivables/aging?as_of={as_of}", headers=org.auth())
    assert r.json()["bucket_names"] == ["current", "1-15", "16-45", "45+"]
    assert _actual(r.json()) == expected


async def test_aging_bad_input_and_visibility(org: Org, other_org: Org) -> None:
    rep_id, rep_key = await org.add_user("rep")
    mine = await make_account(org, owner_id=rep_id)
    theirs = await make_account(org)
    await make_order(org, mine["id"], ordered_at="2026-06-01")
    await make_order(org, theirs["id"], ordered_at="2026-06-01")
    await make_order(other_org, (await make_account(other_org))["id"], ordered_at="2026-06-01")
    for query in ("as_of=yesterday", "group_by=planet", "format=xml", "currency=usd"):
        r = await org.client.get(f"/v1/receivables/aging?{query}", headers=org.auth())
        assert r.status_code == 422, query
    admin = (await org.client.get("/v1/receivables/aging?as_of=2026-11-25", headers=org.auth())).json()
    rep = (await org.client.get("/v1/receivables/aging?as_of=2026-11-25", headers=org.auth(rep_key))).json()
    assert {row["group_id"] for row in admin["rows"]} == {mine["id"], theirs["id"]}
    assert {row["group_id"] for row in rep["rows"]} == {mine["id"]}
    assert admin["totals"][0]["total"] == "20000.00"


async def test_aging_by_owner_and_team_names_the_groups(org: Org) -> None:
    r = await org.client.post("/v1/teams", json={"name": "华东"}, headers=org.auth())
    team = r.json()["id"]
    rep_id, _ = await org.add_user("rep", team_id=team, name="Li Lei")
    account = await make_account(org, owner_id=rep_id)
    await make_order(
        org, account["id"], total="100.00", ordered_at="2026-10-01", terms=[{"percent": "100", "due_days": 0}]
    )
    by_team = (
        await org.client.get("/v1/receivables/aging?as_of=2026-11-15&group_by=team", headers=org.auth())
    ).json()
    assert [(r["group_id"], r["group_name"], r["buckets"]["31-60"]) for r in by_team["rows"]] == [
        (team, "华东", "100.00")
    ]
    by_owner = (
        await org.client.get("/v1/receivables/aging?as_of=2026-11-15&group_by=owner", headers=org.auth())
    ).json()
    assert [(r["group_id"], r["group_name"]) for r in by_owner["rows"]] == [(rep_id, "Li Lei")]
