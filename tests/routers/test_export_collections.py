"""The collections entities in the export: orders, installments, payments, payment_allocations.

Rows, a reversal as an update, tombstones, tenancy, the collections domain's visibility rules
(app.services.receivables.access) and the same values in NDJSON, CSV, Parquet and JSON pages."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq

from tests.conftest import Org
from tests.factories import confirm, make_account, make_deal, make_order, make_team, pay
from tests.routers.exports import apply, ndjson, pull, pull_until, raw_connection
from tests.routers.test_export import export_key, page

COLLECTIONS = ("orders", "installments", "payments", "payment_allocations")


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows}


async def _catalog_kinds(org: Org, entity: str) -> dict[str, str]:
    r = await org.client.get("/v1/export", headers=org.auth())
    assert r.status_code == 200, r.text
    found = next(e for e in r.json()["entities"] if e["name"] == entity)
    return {c["name"]: c["type"] for c in found["columns"]}


async def assert_formats_agree(org: Org, entity: str) -> dict[str, dict[str, Any]]:
    """NDJSON, JSON, CSV and Parquet of one pull: same rows, same columns, same values by type."""
    kinds = await _catalog_kinds(org, entity)
    as_json = {r["id"]: r for r in ndjson((await page(org, entity, "ndjson")).content)}
    body = json.loads((await page(org, entity, "json")).content)
    assert {r["id"]: r for r in body["data"]} == as_json
    as_csv = {r["id"]: r for r in csv.DictReader(io.StringIO((await page(org, entity, "csv")).text))}
    table = pq.read_table(io.BytesIO((await page(org, entity, "parquet")).content))
    as_parquet = {r["id"]: r for r in table.to_pylist()}
    assert set(as_json) == set(as_csv) == set(as_parquet)
    assert table.schema.names == list(kinds)
    for row_id, row in as_json.items():
        text, typed = as_csv[row_id], as_parquet[row_id]
        if row.get("deleted_at"):
            continue  # a tombstone: checked by the tombstone test
        assert list(row) == list(text) == list(typed) == list(kinds), entity
        for name, value in row.items():
            kind = kinds[name]
            if value is None:
                assert text[name] == "" and typed[name] is None, (entity, name)
            elif kind == "decimal":
                # exact decimal strings, the same digits in JSON and CSV; Decimal in Parquet
                assert isinstance(value, str) and text[name] == value, (entity, name)
                assert Decimal(value) == typed[name], (entity, name)
            elif kind == "timestamp":
                assert value.endswith("+00:00") and text[name] == value, (entity, name)
                assert datetime.fromisoformat(value) == typed[name], (entity, name)
            elif kind == "date":
                assert text[name] == value and typed[name] == date.fromisoformat(value), (entity, name)
            elif kind == "json":
                assert json.loads(text[name]) == value == json.loads(typed[name]), (entity, name)
            elif kind == "boolean":
                assert text[name] == ("true" if value else "false") and typed[name] is value
            else:
                assert text[name] == str(value) and str(typed[name]) == str(value), (entity, name)
    return as_json


async def test_payments_and_allocations_are_exported_and_a_reversal_comes_as_an_update(org: Org) -> None:
    account = await make_account(org)
    order = await make_order(org, account["id"], total="10000.00", ordered_at="2026-11-01")
    payment = await pay(org, account["id"], "4000.10", received_at="2026-11-05", reference="TT 1")
    await confirm(org, payment["id"])
    start = await pull_until(org, "payment_allocations", lambda rows: len(rows) == 2)
    allocations = {r["installment_id"]: r for r in start.rows}
    first, second = sorted(order["installments"], key=lambda i: i["sequence"])
    assert Decimal(allocations[first["id"]]["applied_amount"]) == Decimal("3000.00")
    assert Decimal(allocations[second["id"]]["amount"]) == Decimal("1000.10")
    assert {r["payment_id"] for r in start.rows} == {payment["id"]}
    assert all(r["updated_at"] == r["created_at"] and r["source"] == "payment" for r in start.rows)

    payments = await pull_until(org, "payments", lambda rows: payment["id"] in ids(rows))
    row = next(r for r in payments.rows if r["id"] == payment["id"])
    assert (row["status"], row["amount"], row["received_at"], row["reference"]) == (
        "confirmed",
        "4000.1000",
        "2026-11-05",
        "TT 1",
    )
    orders = await pull_until(org, "orders", lambda rows: order["id"] in ids(rows))
    assert Decimal(next(r for r in orders.rows if r["id"] == order["id"])["total"]) == Decimal("10000.00")
    plan = await pull_until(org, "installments", lambda rows: {first["id"], second["id"]} <= ids(rows))
    paid = {r["id"]: Decimal(r["paid_amount"]) for r in plan.rows}
    assert paid == {first["id"]: Decimal("3000.00"), second["id"]: Decimal("1000.10")}

    r = await org.client.post(
        f"/v1/payments/{payment['id']}/reverse",
        json={"reason": "cheque bounced", "reversed_on": "2026-11-20"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    later = await pull_until(org, "payments", lambda rows: payment["id"] in ids(rows), cursor=payments.cursor)
    copy = apply(apply({}, payments.rows), later.rows)
    reversed_row = copy[payment["id"]]
    assert (reversed_row["status"], reversed_row["reversed_on"], reversed_row["reversal_reason"]) == (
        "reversed",
        "2026-11-20",
        "cheque bounced",
    )
    assert datetime.fromisoformat(reversed_row["updated_at"]) > datetime.fromisoformat(row["updated_at"])
    replanned = await pull_until(
        org, "installments", lambda rows: {first["id"], second["id"]} <= ids(rows), cursor=plan.cursor
    )
    assert {r["id"]: Decimal(r["paid_amount"]) for r in replanned.rows} == {
        first["id"]: Decimal(0),
        second["id"]: Decimal(0),
    }
    # The allocations stay as they were (they stop counting with their payment's status).
    assert (await pull(org, "payment_allocations", cursor=start.cursor)).rows == []

    for entity in COLLECTIONS:
        rows = await assert_formats_agree(org, entity)
        assert rows, entity

    r = await org.client.get("/v1/export", headers=org.auth())
    columns = {e["name"]: {c["name"]: c for c in e["columns"]} for e in r.json()["entities"]}
    assert columns["payments"]["amount"]["parquet_type"] == "decimal128(18, 4)"
    assert columns["payments"]["exchange_rate"]["parquet_type"] == "decimal128(20, 10)"
    assert (columns["payments"]["received_at"]["type"], columns["payments"]["status"]["type"]) == (
        "date",
        "string",
    )
    assert columns["payment_allocations"]["updated_at"]["type"] == "timestamp"
    assert list(columns["payment_allocations"])[-3:] == ["deleted_at", "reason", "export_cursor"]


async def test_a_deleted_payment_leaves_tombstones_for_it_and_its_allocations(
    org: Org, database_url: str
) -> None:
    # The API never deletes a payment (it is rejected or reversed); a purge in the database does,
    # and the export must still tell a BI copy.
    account = await make_account(org)
    await make_order(
        org, account["id"], total="100.00", ordered_at="2026-11-01", terms=[{"percent": "100", "due_days": 0}]
    )
    payment = await pay(org, account["id"], "100.00", received_at="2026-11-02")
    await confirm(org, payment["id"])
    allocations = await pull_until(org, "payment_allocations", lambda rows: len(rows) == 1)
    payments = await pull_until(org, "payments", lambda rows: payment["id"] in ids(rows))
    async with raw_connection(database_url) as conn:
        await conn.execute("DELETE FROM payments WHERE id = $1", uuid.UUID(payment["id"]))

    gone = await pull_until(org, "payments", lambda rows: bool(rows), cursor=payments.cursor)
    assert [(r["id"], r["reason"]) for r in gone.rows] == [(payment["id"], "deleted")]
    assert set(gone.rows[0]) == {"id", "deleted_at", "updated_at", "reason", "export_cursor"}
    cascaded = await pull_until(
        org, "payment_allocations", lambda rows: bool(rows), cursor=allocations.cursor
    )
    assert [r["id"] for r in cascaded.rows] == [allocations.rows[0]["id"]]
    assert cascaded.rows[0]["deleted_at"].endswith("+00:00")
    assert apply(apply({}, allocations.rows), cascaded.rows) == {}
    # A tombstone reads the same in every format.
    text = (await page(org, "payments", "csv", cursor=payments.cursor)).text
    [tomb] = list(csv.DictReader(io.StringIO(text)))
    assert (tomb["id"], tomb["reason"], tomb["status"], tomb["amount"]) == (payment["id"], "deleted", "", "")
    table = pq.read_table(
        io.BytesIO((await page(org, "payments", "parquet", cursor=payments.cursor)).content)
    )
    assert table.column("reason").to_pylist() == ["deleted"] and table.column("amount").to_pylist() == [None]


async def test_another_organisations_receivables_never_appear(org: Org, other_org: Org) -> None:
    mine = await make_account(org)
    theirs = await make_account(other_org)
    my_order = await make_order(org, mine["id"], total="50.00", ordered_at="2026-11-01")
    their_order = await make_order(other_org, theirs["id"], total="70.00", ordered_at="2026-11-01")
    my_payment = await pay(org, mine["id"], "50.00", received_at="2026-11-02")
    their_payment = await pay(other_org, theirs["id"], "70.00", received_at="2026-11-02")
    await confirm(org, my_payment["id"])
    await confirm(other_org, their_payment["id"])
    expected = {
        "orders": {my_order["id"]},
        "installments": ids(my_order["installments"]),
        "payments": {my_payment["id"]},
    }
    for entity, want in expected.items():
        got = await pull_until(org, entity, lambda rows, want=want: want <= ids(rows))
        assert ids(got.rows) == want, entity
    allocations = await pull_until(org, "payment_allocations", lambda rows: bool(rows))
    assert {r["payment_id"] for r in allocations.rows} == {my_payment["id"]}
    theirs_now = await pull_until(other_org, "payments", lambda rows: bool(rows))
    assert ids(theirs_now.rows) == {their_payment["id"]}
    assert their_order["id"] not in ids((await pull(org, "orders")).rows)


async def _listed(org: Org, path: str, key: str) -> set[str]:
    r = await org.client.get(path, params={"limit": 200}, headers=org.auth(key))
    assert r.status_code == 200, r.text
    return {row["id"] for row in r.json()["data"]}


async def test_each_role_exports_the_receivables_the_collections_endpoints_show(org: Org) -> None:
    team = await make_team(org)
    manager, _ = await org.add_user("manager", team_id=team)
    rep, _ = await org.add_user("rep", team_id=team)
    other_rep, _ = await org.add_user("rep")
    finance, _ = await org.add_user("rep", finance=True)
    viewer, _ = await org.add_user("viewer")

    # The rep's: a direct order of the rep's account (no deal), its payment and allocations.
    rep_account = await make_account(org, owner_id=rep)
    rep_order = await make_order(org, rep_account["id"], total="300.00", ordered_at="2026-11-01")
    rep_payment = await pay(org, rep_account["id"], "300.00", received_at="2026-11-02")
    # Another rep's account with an order and a payment of its own.
    other_account = await make_account(org, owner_id=other_rep)
    other_order = await make_order(org, other_account["id"], total="200.00", ordered_at="2026-11-01")
    other_payment = await pay(org, other_account["id"], "200.00", received_at="2026-11-02")
    for p in (rep_payment, other_payment):
        await confirm(org, p["id"])
    # An order on the other rep's account for a deal of the rep's: the rep sees it through the
    # deal, and with it that account's payments (the collections rule, not the deals rule alone).
    rep_deal = await make_deal(org, owner_id=rep)
    r = await org.client.post(
        "/v1/orders",
        json={
            "account_id": other_account["id"],
            "deal_id": rep_deal["id"],
            "currency": "CNY",
            "lines": [{"description": "Seats", "quantity": "1", "unit_price": "90.00"}],
            "payment_terms": [{"percent": "100", "due_days": 10}],
        },
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    deal_order = r.json()
    every_order = {rep_order["id"], other_order["id"], deal_order["id"]}
    await pull_until(org, "orders", lambda rows: every_order <= ids(rows))
    all_allocations = (await pull_until(org, "payment_allocations", lambda rows: len(rows) >= 4)).rows

    keys = {
        name: await export_key(org, user, scopes=["export:read", "read"])
        for name, user in (
            ("rep", rep),
            ("manager", manager),
            ("other_rep", other_rep),
            ("finance", finance),
            ("viewer", viewer),
        )
    }
    expected = {
        "rep": ({rep_order["id"], deal_order["id"]}, {rep_payment["id"], other_payment["id"]}),
        "manager": ({rep_order["id"], deal_order["id"]}, {rep_payment["id"], other_payment["id"]}),
        "other_rep": ({other_order["id"], deal_order["id"]}, {other_payment["id"]}),
        "finance": (every_order, {rep_payment["id"], other_payment["id"]}),
        "viewer": (every_order, {rep_payment["id"], other_payment["id"]}),
    }
    for name, key in keys.items():
        exported = {entity: ids((await pull(org, entity, key=key)).rows) for entity in COLLECTIONS}
        assert (exported["orders"], exported["payments"]) == expected[name], name
        # What each export holds is what the collections endpoints list for the same caller.
        assert exported["orders"] == await _listed(org, "/v1/orders", key), name
        assert exported["installments"] == await _listed(org, "/v1/installments", key), name
        assert exported["payments"] == await _listed(org, "/v1/payments", key), name
        assert exported["payment_allocations"] == {
            a["id"] for a in all_allocations if a["payment_id"] in exported["payments"]
        }, name
    # Before this rule the export followed deals only: a direct order (no deal) was the admins'.
    assert rep_order["deal_id"] is None
