"""Change tracking behind the export: commit-safe order, the xid horizon, tombstones."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import make_url

from tests.conftest import Org
from tests.factories import make_deal
from tests.routers.exports import CURSOR, apply, ndjson, pull, pull_until, raw_connection


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["id"] for r in rows]


async def test_a_row_stamped_early_but_committed_late_is_still_pulled(org: Org, database_url: str) -> None:
    first = await make_deal(org, name="early")
    second = await make_deal(org, name="late")
    start = await pull_until(org, "deals", lambda rows: {first["id"], second["id"]} <= set(ids(rows)))

    async with raw_connection(database_url) as slow, raw_connection(database_url) as fast:
        # The slow writer's transaction starts first: now() (its updated_at) is the earlier time.
        await slow.execute("BEGIN")
        slow_started: datetime = await slow.fetchval("SELECT now()")
        await fast.execute(
            "UPDATE deals SET name = 'late, changed', updated_at = now() WHERE id = $1",
            uuid.UUID(second["id"]),
        )
        after_fast = await pull_until(
            org, "deals", lambda rows: second["id"] in ids(rows), cursor=start.cursor
        )
        assert first["id"] not in ids(after_fast.rows)
        # Now the slow writer commits a row stamped before the one already pulled.
        await slow.execute(
            "UPDATE deals SET name = 'early, changed', updated_at = now() WHERE id = $1",
            uuid.UUID(first["id"]),
        )
        await slow.execute("COMMIT")

    late = next(r for r in after_fast.rows if r["id"] == second["id"])
    early_stamp = slow_started.isoformat(timespec="microseconds")
    assert datetime.fromisoformat(early_stamp) < datetime.fromisoformat(late["updated_at"])
    # An updated_at cursor would now ask for rows after the late one's time and never see the early
    # row; the export's cursor still brings it.
    again = await pull_until(org, "deals", lambda rows: first["id"] in ids(rows), cursor=after_fast.cursor)
    early = next(r for r in again.rows if r["id"] == first["id"])
    assert early["name"] == "early, changed"
    assert datetime.fromisoformat(early["updated_at"]) < datetime.fromisoformat(late["updated_at"])


async def test_an_open_writing_transaction_holds_the_cursor_back_until_it_ends(
    org: Org, database_url: str
) -> None:
    one = await make_deal(org)
    two = await make_deal(org)
    start = await pull_until(org, "deals", lambda rows: {one["id"], two["id"]} <= set(ids(rows)))

    async with raw_connection(database_url) as slow, raw_connection(database_url) as fast:
        await slow.execute("BEGIN")
        await slow.execute("UPDATE deals SET name = 'one, changed' WHERE id = $1", uuid.UUID(one["id"]))
        await fast.execute("UPDATE deals SET name = 'two, changed' WHERE id = $1", uuid.UUID(two["id"]))
        stamps = {
            str(r["id"]): (r["change_xid"], r["change_seq"])
            for r in await fast.fetch(
                "SELECT id, change_xid, change_seq FROM deals WHERE id = ANY($1::uuid[])",
                [uuid.UUID(one["id"]), uuid.UUID(two["id"])],
            )
        }
        # two committed, but after a transaction that is still open: not handed out yet, and the
        # cursor does not move past it.
        held = await pull(org, "deals", cursor=start.cursor)
        assert held.rows == []
        assert held.cursor == start.cursor
        await slow.execute("COMMIT")

    both = await pull_until(
        org,
        "deals",
        lambda rows: {"one, changed", "two, changed"} <= {r["name"] for r in rows},
        cursor=start.cursor,
    )
    assert [r["name"] for r in both.rows][-2:] == ["one, changed", "two, changed"]  # the writer's order
    assert stamps[two["id"]][0] > stamps[one["id"]][0]


async def test_a_writer_in_another_database_does_not_hold_the_export_back(
    org: Org, database_url: str
) -> None:
    other = f"loudou_export_other_{uuid.uuid4().hex[:8]}"
    async with raw_connection(database_url) as admin:
        await admin.execute(f'CREATE DATABASE "{other}"')
    try:
        elsewhere_url = make_url(database_url).set(database=other).render_as_string(hide_password=False)
        async with raw_connection(elsewhere_url) as elsewhere:
            await elsewhere.execute("BEGIN")
            await elsewhere.execute("CREATE TABLE t (x int)")  # a writing transaction, left open
            deal = await make_deal(org)
            got = await pull_until(org, "deals", lambda rows: deal["id"] in ids(rows), timeout=10)
            assert deal["id"] in ids(got.rows)
            await elsewhere.execute("ROLLBACK")
    finally:
        async with raw_connection(database_url) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


async def test_deleting_a_deal_leaves_tombstones_for_it_and_what_cascaded(org: Org) -> None:
    deal = await make_deal(org, amount="10.00", currency="CNY")
    start = await pull_until(
        org, "deal_stage_history", lambda rows: deal["id"] in {r["deal_id"] for r in rows}
    )
    history_ids = [r["id"] for r in start.rows if r["deal_id"] == deal["id"]]
    deals_before = await pull(org, "deals")

    r = await org.client.delete(f"/v1/deals/{deal['id']}", headers=org.auth())
    assert r.status_code == 200, r.text

    gone = await pull_until(
        org, "deals", lambda rows: any(r.get("deleted_at") for r in rows), cursor=deals_before.cursor
    )
    tomb = next(r for r in gone.rows if r["id"] == deal["id"])
    assert tomb["reason"] == "deleted"
    assert set(tomb) == {"id", "deleted_at", "updated_at", "reason", "export_cursor"}
    assert tomb["updated_at"] == tomb["deleted_at"]
    assert tomb["deleted_at"].endswith("+00:00")

    history = await pull_until(
        org, "deal_stage_history", lambda rows: any(r.get("deleted_at") for r in rows), cursor=start.cursor
    )
    tombs = {r["id"]: r["reason"] for r in history.rows if r.get("deleted_at")}
    assert tombs == {h: "deleted" for h in history_ids}  # deleted with their deal


async def test_a_soft_deleted_lead_is_a_tombstone_and_takes_its_timeline_along(org: Org) -> None:
    r = await org.client.post(
        "/v1/leads", json={"email": f"{uuid.uuid4().hex[:8]}@example.com"}, headers=org.auth()
    )
    lead = r.json()
    r = await org.client.post(
        f"/v1/leads/{lead['id']}/activities", json={"kind": "call", "subject": "hello"}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    activity = r.json()
    leads = await pull_until(org, "leads", lambda rows: lead["id"] in ids(rows))
    acts = await pull_until(org, "activities", lambda rows: activity["id"] in ids(rows))

    r = await org.client.delete(f"/v1/leads/{lead['id']}", headers=org.auth())
    assert r.status_code == 200, r.text

    gone = await pull_until(org, "leads", lambda rows: lead["id"] in ids(rows), cursor=leads.cursor)
    tomb = next(x for x in gone.rows if x["id"] == lead["id"])
    assert set(tomb) == {"id", "deleted_at", "updated_at", "reason", "export_cursor"}
    assert tomb["reason"] == "deleted"
    timeline = await pull_until(
        org, "activities", lambda rows: activity["id"] in ids(rows), cursor=acts.cursor
    )
    assert next(x for x in timeline.rows if x["id"] == activity["id"])["reason"] == "lead_deleted"


async def _listed(org: Org, path: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        r = await org.client.get(path, params=params, headers=org.auth())
        assert r.status_code == 200, r.text
        out.update({row["id"]: row for row in r.json()["data"]})
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


async def test_pulling_while_another_client_writes_ends_with_exactly_the_current_set(org: Org) -> None:
    h = org.auth()
    live: dict[str, list[str]] = {"leads": [], "deals": []}
    for i in range(8):
        r = await org.client.post(
            "/v1/leads", json={"email": f"seed{i}-{uuid.uuid4().hex[:6]}@example.com"}, headers=h
        )
        live["leads"].append(r.json()["id"])
        live["deals"].append((await make_deal(org, amount="1.00", currency="CNY"))["id"])

    copies: dict[str, dict[str, dict[str, Any]]] = {"leads": {}, "deals": {}}
    cursors: dict[str, str | None] = {"leads": None, "deals": None}
    pulled: dict[str, list[dict[str, Any]]] = {"leads": [], "deals": []}
    done = asyncio.Event()

    async def write() -> None:
        rng = random.Random(13)  # noqa: S311 (a reproducible mix of writes)
        for step in range(80):
            entity = rng.choice(["leads", "deals"])
            ids_ = live[entity]
            op = rng.choice(
                ["create", "update", "update", "delete"] + (["erase"] if entity == "leads" else [])
            )
            if op == "create" or not ids_:
                if entity == "leads":
                    r = await org.client.post(
                        "/v1/leads", json={"email": f"w{step}-{uuid.uuid4().hex[:6]}@example.com"}, headers=h
                    )
                else:
                    r = await org.client.post(
                        "/v1/deals",
                        json={"name": f"w{step}", "amount": f"{step}.5", "currency": "CNY"},
                        headers=h,
                    )
                assert r.status_code == 201, r.text
                ids_.append(r.json()["id"])
            elif op == "update":
                target = rng.choice(ids_)
                body = (
                    {"company": f"c{step}"}
                    if entity == "leads"
                    else {"name": f"n{step}", "amount": f"{step}.25"}
                )
                r = await org.client.patch(f"/v1/{entity}/{target}", json=body, headers=h)
                assert r.status_code == 200, r.text
            elif op == "delete":
                target = ids_.pop(rng.randrange(len(ids_)))
                assert (await org.client.delete(f"/v1/{entity}/{target}", headers=h)).status_code == 200
            else:
                target = ids_.pop(rng.randrange(len(ids_)))  # erased: still listed, no longer changed
                r = await org.client.post(f"/v1/leads/{target}/erase", headers=h)
                assert r.status_code == 200, r.text
            await asyncio.sleep(0)
        done.set()

    async def read_once(entity: str) -> None:
        params: dict[str, Any] = {"format": "ndjson", "limit": 3}
        if cursors[entity]:
            params["cursor"] = cursors[entity]
        r = await org.client.get(f"/v1/export/{entity}", params=params, headers=h)
        assert r.status_code == 200, r.text
        rows = ndjson(r.content)
        pulled[entity] += rows
        apply(copies[entity], rows)
        cursors[entity] = r.headers[CURSOR]

    async def read() -> None:
        while not done.is_set():
            for entity in ("leads", "deals"):
                await read_once(entity)

    await asyncio.gather(write(), read())
    assert all(pulled.values()), "the reader pulled while the writer wrote"

    # Then pull again from the last cursors until caught up with the lists.
    current = {"leads": await _listed(org, "/v1/leads"), "deals": await _listed(org, "/v1/deals")}
    deadline = asyncio.get_running_loop().time() + 20
    for entity in ("leads", "deals"):
        while True:
            before = cursors[entity]
            await read_once(entity)
            caught_up = cursors[entity] == before
            matches = {k: v["version"] for k, v in copies[entity].items()} == {
                k: v["version"] for k, v in current[entity].items()
            }
            if caught_up and matches:
                break
            assert asyncio.get_running_loop().time() < deadline, f"{entity} never matched the current set"
            if caught_up:
                await asyncio.sleep(0.1)
        for row_id, row in current[entity].items():
            copied = copies[entity][row_id]
            for field in (
                ("email", "name", "company", "erased_at") if entity == "leads" else ("name", "amount")
            ):
                value = copied[field]
                if field == "amount":
                    assert Decimal(value) == Decimal(row[field])
                elif field.endswith("_at") and value:
                    assert datetime.fromisoformat(value) == datetime.fromisoformat(row[field])
                else:
                    assert value == row[field], (entity, field)
        positions = [r["export_cursor"] for r in pulled[entity]]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)  # no row twice
        versions = [(r["id"], r.get("version")) for r in pulled[entity] if not r.get("deleted_at")]
        assert len(versions) == len(set(versions)), "a version of a row came twice"
