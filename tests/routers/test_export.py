"""GET /v1/export and /v1/export/{entity}: formats, paging, scope, visibility, tenancy, audit."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pyarrow.parquet as pq

from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import Org, Servers, fresh_database
from tests.factories import confirm, make_deal, make_team, pay
from tests.routers.exports import CURSOR, apply, ndjson, pull, pull_until
from tests.routers.test_quotes import _sent_quote, make_quote


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows}


async def export_key(org: Org, user_id: str | None = None, scopes: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": "bi", "scopes": scopes or ["export:read"]}
    if user_id:
        body["user_id"] = user_id
    r = await org.client.post("/v1/api-keys", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


async def page(org: Org, entity: str, fmt: str, key: str | None = None, **params: Any) -> Any:
    r = await org.client.get(f"/v1/export/{entity}", params={"format": fmt, **params}, headers=org.auth(key))
    assert r.status_code == 200, r.text
    return r


async def test_ndjson_csv_parquet_and_json_of_one_pull_carry_the_same_rows_and_values(org: Org) -> None:
    account = (
        await org.client.post(
            "/v1/accounts",
            json={"name": 'ACME, "quoted"\nInc', "credit_limit": "1234.5678"},
            headers=org.auth(),
        )
    ).json()
    made = [
        await make_deal(
            org, amount="1234.56", currency="CNY", account_id=account["id"], attributes={"k": [1, "é"]}
        ),
        await make_deal(org, amount="1000", currency="JPY", name='見積, "x"'),
        await make_deal(org, amount="0.1", currency="USD", expected_close_date="2027-01-31"),
    ]
    await pull_until(org, "deals", lambda rows: ids(made) <= ids(rows))

    as_json = {r["id"]: r for r in ndjson((await page(org, "deals", "ndjson")).content)}
    body = json.loads((await page(org, "deals", "json")).content)
    assert {r["id"]: r for r in body["data"]} == as_json
    as_csv = {r["id"]: r for r in csv.DictReader(io.StringIO((await page(org, "deals", "csv")).text))}
    table = pq.read_table(io.BytesIO((await page(org, "deals", "parquet")).content))
    as_parquet = {r["id"]: r for r in table.to_pylist()}
    assert set(as_json) == set(as_csv) == set(as_parquet) == ids(made)

    assert str(table.schema.field("amount").type) == "decimal128(18, 4)"
    assert str(table.schema.field("updated_at").type) == "timestamp[us, tz=UTC]"
    for deal_id, row in as_json.items():
        text_row, typed = as_csv[deal_id], as_parquet[deal_id]
        assert list(text_row) == list(row) == list(typed)  # same columns, same order
        for name, value in row.items():
            if value is None:
                assert text_row[name] == "" and typed[name] is None, name
            elif isinstance(value, bool):
                assert text_row[name] == ("true" if value else "false") and typed[name] is value
            elif isinstance(value, dict | list):
                assert json.loads(text_row[name]) == value == json.loads(typed[name])
            elif name in ("amount", "probability"):
                assert Decimal(text_row[name]) == Decimal(value) == typed[name]
            elif name.endswith("_at"):
                assert value.endswith("+00:00") and text_row[name] == value
                assert datetime.fromisoformat(value) == typed[name]
            else:
                assert text_row[name] == str(value) and str(typed[name]) == str(value), name
    amounts = {r["currency"]: Decimal(r["amount"]) for r in as_json.values()}
    assert amounts == {"CNY": Decimal("1234.56"), "JPY": Decimal("1000"), "USD": Decimal("0.1")}
    assert as_parquet[made[0]["id"]]["amount"] == Decimal("1234.5600")
    assert as_json[made[0]["id"]]["attributes"] == {"k": [1, "é"]}

    accounts = pq.read_table(io.BytesIO((await page(org, "accounts", "parquet")).content)).to_pylist()
    assert [(a["name"], a["credit_limit"]) for a in accounts] == [(account["name"], Decimal("1234.5678"))]


async def test_pages_carry_the_cursor_and_end_with_an_empty_page(org: Org) -> None:
    made = [await make_deal(org) for _ in range(5)]
    await pull_until(org, "deals", lambda rows: ids(made) <= ids(rows))

    seen: list[str] = []
    cursor: str | None = None
    sizes = []
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await page(org, "deals", "json", **params)
        body = r.json()
        assert r.headers[CURSOR] == body["next_cursor"]
        assert r.headers["Loudou-Has-More"] == ("true" if body["has_more"] else "false")
        assert ("Link" in r.headers) is body["has_more"]
        if body["data"]:
            assert body["next_cursor"] == body["data"][-1]["export_cursor"]
        else:
            assert body["next_cursor"] == cursor  # caught up: the cursor stays where it was
        sizes.append(len(body["data"]))
        seen += [row["id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if not body["data"]:
            break
    assert sizes == [2, 2, 1, 0]
    assert seen == [d["id"] for d in made]  # creation order, once each

    first = await page(org, "deals", "ndjson", limit=2)
    assert first.headers["Link"].endswith(f'cursor={first.headers[CURSOR]}>; rel="next"')
    r = await page(org, "deals", "csv", cursor=cursor)
    assert r.text.splitlines() == [r.text.splitlines()[0]] and r.text.startswith("id,")  # header only
    empty = pq.read_table(io.BytesIO((await page(org, "deals", "parquet", cursor=cursor)).content))
    assert empty.num_rows == 0 and "amount" in empty.schema.names


async def test_updated_since_starts_from_a_time(org: Org) -> None:
    old = await make_deal(org)
    await pull_until(org, "deals", lambda rows: old["id"] in ids(rows))
    since = datetime.now().astimezone().isoformat()
    new = await make_deal(org)
    got = await pull_until(org, "deals", lambda rows: new["id"] in ids(rows), timeout=15)
    assert old["id"] in ids(got.rows)
    only_new = await pull(org, "deals", updated_since=since)
    assert ids(only_new.rows) == {new["id"]}


async def test_bad_requests_are_problems(org: Org) -> None:
    h = org.auth()
    r = await org.client.get("/v1/export/payrolls", headers=h)
    assert r.status_code == 404 and "deals" in r.json()["detail"]
    r = await org.client.get("/v1/export/deals", params={"cursor": "not-a-cursor"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "invalid_cursor"
    r = await org.client.get("/v1/export/deals", params={"format": "xlsx"}, headers=h)
    assert r.status_code == 422
    r = await org.client.get("/v1/export/deals", params={"limit": 0}, headers=h)
    assert r.status_code == 422
    r = await org.client.get("/v1/export/deals", params={"updated_since": "2026-01-01T00:00:00"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "updated_since"
    r = await org.client.get("/v1/export/deals")
    assert r.status_code == 401


async def test_export_needs_the_export_scope_that_no_other_read_scope_implies(org: Org) -> None:
    await make_deal(org)
    for scopes in (["read"], ["deals:read", "leads:read", "metrics:read"]):
        key = await export_key(org, scopes=scopes)
        for path in ("/v1/export", "/v1/export/deals"):
            r = await org.client.get(path, headers=org.auth(key))
            assert r.status_code == 403 and "export:read" in r.json()["detail"], (scopes, path)
    key = await export_key(org, scopes=["export:read"])
    assert (await org.client.get("/v1/export/deals", headers=org.auth(key))).status_code == 200


async def test_another_organisations_rows_never_appear(org: Org, other_org: Org) -> None:
    mine = await make_deal(org)
    theirs = await make_deal(other_org)
    r = await other_org.client.post(
        "/v1/leads", json={"email": f"{uuid.uuid4().hex[:8]}@example.com"}, headers=other_org.auth()
    )
    assert r.status_code == 201
    await other_org.client.delete(f"/v1/deals/{theirs['id']}", headers=other_org.auth())
    got = await pull_until(org, "deals", lambda rows: mine["id"] in ids(rows))
    assert ids(got.rows) == {mine["id"]}
    assert (await pull(org, "leads")).rows == []
    theirs_now = await pull_until(other_org, "deals", lambda rows: theirs["id"] in ids(rows))
    assert mine["id"] not in ids(theirs_now.rows)


async def test_each_role_exports_what_its_lists_show(org: Org) -> None:
    team = await make_team(org)
    manager, _ = await org.add_user("manager", team_id=team)
    rep, rep_key = await org.add_user("rep", team_id=team)
    other_rep, _ = await org.add_user("rep")
    viewer, _ = await org.add_user("viewer")
    deals = {
        "rep": await make_deal(org, owner_id=rep),
        "other": await make_deal(org, owner_id=other_rep),
        "admin": await make_deal(org),
    }
    everything = await pull_until(org, "deals", lambda rows: ids(list(deals.values())) <= ids(rows))
    assert ids(everything.rows) == ids(list(deals.values()))

    keys = {
        role: await export_key(org, user)
        for role, user in (("rep", rep), ("manager", manager), ("viewer", viewer))
    }
    for role, expected in (
        ("rep", {deals["rep"]["id"]}),
        ("manager", {deals["rep"]["id"]}),
        ("viewer", ids(list(deals.values()))),
    ):
        got = await pull(org, "deals", key=keys[role])
        assert ids(got.rows) == expected, role
        listed = await org.client.get(
            "/v1/deals", params={"limit": 200}, headers=org.auth(keys[role] if role != "rep" else rep_key)
        )
        if listed.status_code == 200:
            assert {d["id"] for d in listed.json()["data"]} == expected, role

    pooled = (
        await org.client.post("/v1/leads", json={"email": "pool@example.com"}, headers=org.auth())
    ).json()
    owned = (
        await org.client.post(
            "/v1/leads", json={"email": "other@example.com", "owner_id": other_rep}, headers=org.auth()
        )
    ).json()
    await pull_until(org, "leads", lambda rows: {pooled["id"], owned["id"]} <= ids(rows))
    assert ids((await pull(org, "leads", key=keys["rep"])).rows) == {pooled["id"]}  # the pool, not others'

    # Tombstones go to everyone: a row may have been theirs before it was deleted.
    await org.client.delete(f"/v1/deals/{deals['other']['id']}", headers=org.auth())
    after = await pull_until(
        org, "deals", lambda rows: any(r.get("deleted_at") for r in rows), key=keys["rep"]
    )
    assert [r["id"] for r in after.rows if r.get("deleted_at")] == [deals["other"]["id"]]


async def test_an_export_is_audited_with_who_what_and_from_where(org: Org) -> None:
    await make_deal(org)
    key = await export_key(org)
    first = await page(org, "deals", "csv", key=key, limit=1)
    cursor = first.headers[CURSOR]
    second = await page(org, "deals", "ndjson", key=key, cursor=cursor)
    r = await org.client.get("/v1/audit-log", params={"entity": "export"}, headers=org.auth())
    assert r.status_code == 200, r.text
    entries = {e["entity_id"]: e for e in r.json()["data"]}
    entry = entries[second.headers["Loudou-Export-Id"]]
    assert entry["action"] == "export" and entry["actor_api_key_id"] is not None
    assert entry["changes"]["entity"] == "deals" and entry["changes"]["cursor"] == cursor
    assert entry["changes"]["format"] == "ndjson"
    assert entries[first.headers["Loudou-Export-Id"]]["changes"]["cursor"] is None


async def test_the_catalog_lists_entities_columns_and_how_paging_works(org: Org) -> None:
    r = await org.client.get("/v1/export", headers=org.auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["definition_version"] == 1 and body["cursor_header"] == CURSOR
    assert body["change_tracking"]["lag_seconds"] == 0 and body["change_tracking"]["method"] == "xid_horizon"
    entities = {e["name"]: e for e in body["entities"]}
    assert set(entities) >= {
        "leads", "activities", "deals", "deal_stage_history", "deal_field_history", "quotes", "quote_lines",
        "orders", "installments", "payments", "payment_allocations", "accounts", "contacts", "users",
        "teams", "tasks",
    }  # fmt: skip
    for entity in entities.values():
        names = [c["name"] for c in entity["columns"]]
        assert (
            names[0] == "id"
            and "updated_at" in names
            and names[-3:] == ["deleted_at", "reason", "export_cursor"]
        )
    amount = next(c for c in entities["deals"]["columns"] if c["name"] == "amount")
    assert amount == {
        "name": "amount",
        "type": "decimal",
        "precision": 18,
        "scale": 4,
        "parquet_type": "decimal128(18, 4)",
    }
    assert "password_hash" not in [c["name"] for c in entities["users"]["columns"]]
    # What the catalogue says is what a page holds.
    deal = await make_deal(org)
    row = (await pull_until(org, "deals", lambda rows: deal["id"] in ids(rows))).rows[0]
    assert list(row) == [c["name"] for c in entities["deals"]["columns"]]


async def test_every_entity_exports_in_every_format(org: Org) -> None:
    account = (await org.client.post("/v1/accounts", json={"name": "ACME"}, headers=org.auth())).json()
    await org.client.post(
        "/v1/contacts", json={"name": "Ada", "account_id": account["id"]}, headers=org.auth()
    )
    lead = (await org.client.post("/v1/leads", json={"email": "ada@example.com"}, headers=org.auth())).json()
    await org.client.post(
        f"/v1/leads/{lead['id']}/activities", json={"kind": "note", "body": "x"}, headers=org.auth()
    )
    deal = await make_deal(org, currency="CNY", account_id=account["id"], amount="100")
    sent = await _sent_quote(org, deal["id"], payment_terms=[{"percent": "100", "due_days": 30}])
    assert (await org.client.post(f"/v1/quotes/{sent['id']}/accept", headers=org.auth())).status_code == 200
    await confirm(org, (await pay(org, account["id"], "40.00", received_at="2026-11-02"))["id"])
    await make_team(org)
    r = await org.client.get("/v1/export", headers=org.auth())
    for entity in r.json()["entities"]:
        name = entity["name"]
        rows = ndjson((await page(org, name, "ndjson")).content)
        table = pq.read_table(io.BytesIO((await page(org, name, "parquet")).content))
        text = (await page(org, name, "csv")).text
        assert table.num_rows == len(rows) == len(list(csv.DictReader(io.StringIO(text)))), name
        assert table.schema.names == [c["name"] for c in entity["columns"]], name
        if name not in ("tasks",):
            assert rows, name
    lines = ndjson((await page(org, "quote_lines", "ndjson")).content)
    assert [(x["quote_id"], x["position"], Decimal(x["unit_price"])) for x in lines] == [
        (sent["id"], 1, Decimal("100"))
    ]


async def test_erased_and_merged_leads_are_updates_and_erased_data_never_comes_back(org: Org) -> None:
    keep = (
        await org.client.post(
            "/v1/leads", json={"email": "keep@example.com", "name": "Keep"}, headers=org.auth()
        )
    ).json()
    dup = (
        await org.client.post(
            "/v1/leads", json={"phone": "+8613800138000", "name": "Dup"}, headers=org.auth()
        )
    ).json()
    gone = (
        await org.client.post(
            "/v1/leads", json={"email": "secret@example.com", "name": "Secret Person"}, headers=org.auth()
        )
    ).json()
    start = await pull_until(org, "leads", lambda rows: {keep["id"], dup["id"], gone["id"]} <= ids(rows))
    r = await org.client.post(
        f"/v1/leads/{keep['id']}/merge", json={"duplicate_id": dup["id"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    assert (await org.client.post(f"/v1/leads/{gone['id']}/erase", headers=org.auth())).status_code == 200

    later = await pull_until(
        org, "leads", lambda rows: {dup["id"], gone["id"]} <= ids(rows), cursor=start.cursor
    )
    copy = apply(apply({}, start.rows), later.rows)
    assert copy[dup["id"]]["duplicate_of"] == keep["id"] and copy[dup["id"]]["deleted_at"] is None
    erased = copy[gone["id"]]
    assert erased["erased_at"] and erased["email"] is None and erased["name"] is None
    for fmt in ("ndjson", "csv", "json"):
        assert b"secret@example.com" not in (await page(org, "leads", fmt)).content
        assert b"Secret Person" not in (await page(org, "leads", fmt)).content


async def test_a_draft_edited_down_to_fewer_lines_tombstones_the_lines_it_lost(org: Org) -> None:
    deal = await make_deal(org, currency="CNY")
    lines = [
        {"description": f"line {i}", "quantity": "1", "unit_price": "10", "tax_rate": "0"} for i in range(3)
    ]
    quote = await make_quote(org, deal["id"], lines=lines)
    start = await pull_until(org, "quote_lines", lambda rows: len(rows) == 3)
    r = await org.client.patch(f"/v1/quotes/{quote['id']}", json={"lines": lines[:1]}, headers=org.auth())
    assert r.status_code == 200, r.text
    later = await pull_until(org, "quote_lines", lambda rows: len(rows) >= 3, cursor=start.cursor)
    copy = apply(apply({}, start.rows), later.rows)
    assert [(x["position"], x["description"]) for x in copy.values()] == [(1, "line 0")]
    assert sorted(r["reason"] for r in later.rows if r.get("deleted_at")) == ["line_removed", "line_removed"]


async def test_exports_read_from_database_read_url_when_it_is_set(
    org: Org, settings: Settings, servers: Servers
) -> None:
    deal = await make_deal(org)
    await pull_until(org, "deals", lambda rows: deal["id"] in ids(rows))
    # A "replica" that has the schema but not this organisation's rows: what the export says must
    # come from it, while everything else still reads and writes the primary.
    async with fresh_database(servers) as replica_url:
        state = AppState.open(settings.model_copy(update={"database_read_url": replica_url}))
        try:
            assert state.reads is state.read_engine and state.reads is not state.engine
            app = create_app(settings, state=state)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                listed = await client.get("/v1/deals", headers=org.auth())
                assert [d["id"] for d in listed.json()["data"]] == [deal["id"]]
                r = await client.get("/v1/export/deals", headers=org.auth())
                assert r.status_code == 200 and r.content == b""
        finally:
            await state.close()
