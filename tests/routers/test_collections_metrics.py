"""GET /v1/metrics/collections equals an independent computation of DESIGN §7 (due, collected,
collection rate, overdue, DSO) by account, by month and in total, per currency; CSV too."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.services.receivables.metrics import DEFINITIONS
from tests.conftest import Org
from tests.factories import confirm, make_account, make_order, pay

D = Decimal


def _open_as_of(inst: dict[str, Any], allocations: list[dict[str, Any]], day: date) -> Decimal:
    if inst["ordered_on"] > day:
        return D(0)
    paid = sum(
        (
            a["applied"]
            for a in allocations
            if a["installment_id"] == inst["id"]
            and a["status"] in ("confirmed", "reversed")
            and a["received_at"] <= day
            and (a["reversed_on"] is None or a["reversed_on"] > day)
        ),
        D(0),
    )
    written_off = inst["written_off"] if inst["written_off_on"] and inst["written_off_on"] <= day else D(0)
    open_amount: Decimal = max(inst["amount"] - paid - written_off, D(0))
    return open_amount


def _metrics(
    insts: list[dict[str, Any]], allocations: list[dict[str, Any]], start: date, end: date
) -> dict[tuple[str, str], dict[str, Any]]:
    """{(account or TOTAL, currency): metrics} computed by hand."""
    last = end - timedelta(days=1)
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def row(key: tuple[str, str]) -> dict[str, Any]:
        return out.setdefault(key, {"due": D(0), "collected": D(0), "overdue": D(0), "open": D(0)})

    by_id = {i["id"]: i for i in insts}
    for i in insts:
        for key in ((i["account"], i["currency"]), ("TOTAL", i["currency"])):
            if start <= i["due"] < end and i["written_off_on"] is None:
                row(key)["due"] += i["amount"]
            left = _open_as_of(i, allocations, last)
            if left:
                row(key)["open"] += left
                if i["due"] < last:
                    row(key)["overdue"] += left
    for a in allocations:
        i = by_id[a["installment_id"]]
        for key in ((i["account"], i["currency"]), ("TOTAL", i["currency"])):
            if a["status"] in ("confirmed", "reversed") and start <= a["received_at"] < end:
                row(key)["collected"] += a["applied"]
            if a["status"] == "reversed" and start <= a["reversed_on"] < end:
                row(key)["collected"] -= a["applied"]
    days = D((end - start).days)
    for r in out.values():
        r["rate"] = None if not r["due"] else (r["collected"] / r["due"]).quantize(D("0.0001"), ROUND_HALF_UP)
        r["dso"] = None if not r["due"] else (r["open"] / r["due"] * days).quantize(D("0.01"), ROUND_HALF_UP)
    return out


def _actual(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for r in [*report["rows"], *({**t, "group_id": "TOTAL"} for t in report["totals"])]:
        out[(r["group_id"], r["currency"])] = {
            "due": D(r["due"]),
            "collected": D(r["collected"]),
            "overdue": D(r["overdue"]),
            "open": D(r["open_receivables"]),
            "rate": None if r["collection_rate"] is None else D(str(r["collection_rate"])),
            "dso": None if r["dso_days"] is None else D(str(r["dso_days"])),
        }
    return out


async def test_acceptance_collections_metrics_equal_an_independent_computation(org: Org) -> None:
    rep1, _ = await org.add_user("rep")
    a = await make_account(org, name="Alpha", owner_id=rep1)
    b = await make_account(org, name="Beta")
    orders = [
        await make_order(
            org,
            a["id"],
            total="10000.00",
            ordered_at="2026-08-01",
            terms=[{"percent": "30", "due_days": 0}, {"percent": "70", "due_date": "2026-09-15"}],
        ),
        await make_order(
            org,
            b["id"],
            total="5000.00",
            ordered_at="2026-08-20",
            terms=[{"percent": "100", "due_date": "2026-09-05"}],
        ),
        await make_order(
            org,
            a["id"],
            total="2000.00",
            ordered_at="2026-09-01",
            terms=[{"percent": "100", "due_date": "2026-09-20"}],
        ),
        await make_order(
            org,
            b["id"],
            total="1000.00",
            currency="USD",
            ordered_at="2026-09-02",
            terms=[{"percent": "100", "due_date": "2026-09-10"}],
        ),
    ]
    r = await org.client.post(
        f"/v1/orders/{orders[2]['id']}/cancel", json={"effective_on": "2026-09-25"}, headers=org.auth()
    )
    orders[2] = r.json()
    await confirm(org, (await pay(org, a["id"], "3000.00", received_at="2026-08-05"))["id"])
    await confirm(org, (await pay(org, a["id"], "4000.00", received_at="2026-09-10"))["id"])
    late = await confirm(org, (await pay(org, a["id"], "1000.00", received_at="2026-09-12"))["id"])
    bounced = await confirm(org, (await pay(org, b["id"], "2000.00", received_at="2026-09-03"))["id"])
    await pay(org, b["id"], "1500.00", received_at="2026-09-25")  # pending: never counted
    await confirm(org, (await pay(org, b["id"], "400.00", currency="USD", received_at="2026-09-11"))["id"])
    for payment, day in ((bounced, "2026-09-20"), (late, "2026-10-02")):
        r = await org.client.post(
            f"/v1/payments/{payment['id']}/reverse",
            json={"reason": "r", "reversed_on": day},
            headers=org.auth(),
        )
        assert r.status_code == 200, r.text

    insts = [
        {
            "id": i["id"],
            "account": o["account_id"],
            "currency": i["currency"],
            "amount": D(i["amount"]),
            "due": date.fromisoformat(i["due_date"]),
            "ordered_on": date.fromisoformat(o["ordered_at"][:10]),
            "written_off": D(i["written_off_amount"]),
            "written_off_on": date.fromisoformat(i["written_off_on"]) if i["written_off_on"] else None,
        }
        for o in orders
        for i in o["installments"]
    ]
    payments = (await org.client.get("/v1/payments?limit=100", headers=org.auth())).json()["data"]
    allocations = [
        {
            "installment_id": al["installment_id"],
            "applied": D(al["applied_amount"]),
            "status": p["status"],
            "received_at": date.fromisoformat(p["received_at"]),
            "reversed_on": date.fromisoformat(p["reversed_on"]) if p["reversed_on"] else None,
        }
        for p in payments
        for al in p["allocations"]
    ]
    start, end = date(2026, 9, 1), date(2026, 10, 1)
    expected = _metrics(insts, allocations, start, end)
    assert expected[("TOTAL", "CNY")]["due"] == D("12000.00")  # the written-off 2,000 is left out
    r = await org.client.get(
        f"/v1/metrics/collections?from={start}&to={end}&group_by=account", headers=org.auth()
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["definition_version"] == 1
    assert report["filters"] == {
        "from": "2026-09-01",
        "to": "2026-10-01",
        "group_by": "account",
        "owner_id": None,
        "team_id": None,
        "account_id": None,
    }
    assert _actual(report) == expected
    assert {row["group_name"] for row in report["rows"]} == {"Alpha", "Beta"}

    r = await org.client.get(
        f"/v1/metrics/collections?from={start}&to={end}&group_by=account&format=csv", headers=org.auth()
    )
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    from_csv = {("TOTAL" if x["group_by"] == "TOTAL" else x["group_id"], x["currency"]): x for x in rows}
    for key, values in expected.items():
        assert (
            D(from_csv[key]["due"]) == values["due"] and D(from_csv[key]["collected"]) == values["collected"]
        )
        assert (D(from_csv[key]["dso_days"]) if from_csv[key]["dso_days"] else None) == values["dso"]

    # By month: each month is its own period.
    r = await org.client.get(
        "/v1/metrics/collections?from=2026-08-01&to=2026-10-01&group_by=month", headers=org.auth()
    )
    months = {(row["group_id"], row["currency"]): row for row in r.json()["rows"]}
    august = _metrics(insts, allocations, date(2026, 8, 1), date(2026, 9, 1))[("TOTAL", "CNY")]
    assert D(months[("2026-08", "CNY")]["due"]) == august["due"] == D("3000.00")
    assert D(months[("2026-08", "CNY")]["collected"]) == august["collected"] == D("3000.00")
    assert D(months[("2026-09", "CNY")]["collected"]) == expected[("TOTAL", "CNY")]["collected"]

    # Filters narrow and are echoed; a rep sees only their accounts.
    r = await org.client.get(
        f"/v1/metrics/collections?from={start}&to={end}&owner_id={rep1}", headers=org.auth()
    )
    assert r.json()["filters"]["owner_id"] == rep1
    alpha = {k[1]: v for k, v in expected.items() if k[0] == a["id"]}
    assert {t["currency"]: D(t["due"]) for t in r.json()["totals"]} == {c: v["due"] for c, v in alpha.items()}


async def test_collections_metrics_bad_input_and_definitions(org: Org) -> None:
    for query in (
        "from=2026-09-01",
        "from=2026-09-01&to=2026-08-01",
        "from=x&to=2026-10-01",
        "from=2026-09-01&to=2026-10-01&group_by=planet",
        "from=2000-01-01&to=2030-01-01",
    ):
        r = await org.client.get(f"/v1/metrics/collections?{query}", headers=org.auth())
        assert r.status_code == 422, query
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await org.client.get("/v1/metrics/collections?from=2026-09-01&to=2026-10-01", headers=org.auth())
    assert r.json()["totals"] == [] and r.json()["rows"] == []
    assert {d["name"] for d in DEFINITIONS} == {
        "collections.due",
        "collections.collected",
        "collections.collection_rate",
        "collections.overdue",
        "collections.dso",
    }
    assert all(d["version"] == 1 and d["formula"] and d["counted"] and d["excluded"] for d in DEFINITIONS)
