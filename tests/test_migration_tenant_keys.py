"""The tenant-keys migration on a database filled at the previous head: every row and id kept,
the API answers the same, the cross-tenant check holds, and the downgrade restores the schema."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.config import Settings
from app.main import create_app
from app.migrate import downgrade, revision_before, upgrade
from app.state import AppState
from tests.conftest import Org, Servers, make_org
from tests.test_schema_keys import key_violations

REVISION = "b1c6tenantkeys"
ROWS_PER_ORG = 3


def previous_revision() -> str:
    """The head this migration upgrades from."""
    return revision_before(REVISION)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def empty_database(servers: Servers) -> AsyncIterator[str]:
    """A database of our own, with no schema yet."""
    name = f"loudou_keys_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_dsn(servers.database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_dsn(servers.database_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _value(data_type: str, length: int | None, n: int) -> Any:
    """A value of this column type, distinct per row for text and numbers."""
    if data_type in ("text", "character varying"):
        return uuid.uuid4().hex[: min(length or 32, 32)]
    if data_type == "uuid":
        return uuid.uuid4()
    if data_type == "integer":
        return n + 1
    if data_type == "numeric":
        return Decimal(n + 1)
    if data_type == "boolean":
        return False
    if data_type == "timestamp with time zone":
        return dt.datetime.now(dt.UTC)
    if data_type == "date":
        return dt.date.today()
    if data_type == "jsonb":
        return "{}"
    if data_type == "bytea":
        return b""
    raise AssertionError(f"no test value for {data_type}")


async def fill_every_table(conn: asyncpg.Connection, org_ids: list[uuid.UUID]) -> None:
    """ROWS_PER_ORG rows in every table for each organisation, every foreign key (nullable ones
    too) pointing at a row of the same organisation, whatever tables the schema has."""
    columns: dict[str, list[asyncpg.Record]] = {}
    for row in await conn.fetch(
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name NOT IN ('alembic_version', 'organisations') ORDER BY table_name, ordinal_position"
    ):
        columns.setdefault(row["table_name"], []).append(row)
    references = {
        (row["tbl"], row["col"]): row["target"]
        for row in await conn.fetch(
            "SELECT c.conrelid::regclass::text AS tbl, a.attname AS col, c.confrelid::regclass::text AS target"
            " FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)"
            " WHERE c.contype = 'f' AND a.attname <> 'org_id'"
        )
    }
    ids = {(t, o, n): uuid.uuid4() for t in columns for o in org_ids for n in range(ROWS_PER_ORG)}
    # Foreign keys are checked by the migration, not while filling (so no insert order is needed).
    await conn.execute("SET session_replication_role = replica")
    try:
        for table, cols in columns.items():
            for org in org_ids:
                for n in range(ROWS_PER_ORG):
                    values: dict[str, Any] = {}
                    for c in cols:
                        name = c["column_name"]
                        target = references.get((table, name))
                        if name == "id":
                            values[name] = ids[(table, org, n)]
                        elif name == "org_id":
                            values[name] = org
                        elif target == table:  # self reference: the previous row, none for the first
                            values[name] = ids[(table, org, n - 1)] if n else None
                        elif target is not None:
                            values[name] = ids.get(
                                (target, org, n), org if target == "organisations" else None
                            )
                        elif c["is_nullable"] == "NO" and c["column_default"] is None:
                            values[name] = _value(c["data_type"], c["character_maximum_length"], n)
                    names = ", ".join(f'"{k}"' for k in values)
                    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
                    await conn.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', *values.values())
    finally:
        await conn.execute("SET session_replication_role = DEFAULT")


async def rows(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Every row of every table, as sorted JSON."""
    tables = [
        r[0]
        for r in await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
            " AND relname <> 'alembic_version'"
        )
    ]
    return {
        t: sorted(r[0] for r in await conn.fetch(f'SELECT to_jsonb(x)::text FROM "{t}" x')) for t in tables
    }


async def schema(conn: asyncpg.Connection) -> list[str]:
    """Every constraint and index definition."""
    found = await conn.fetch(
        "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        " UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )
    return sorted(r[0] for r in found)


async def _through_the_api(client: httpx.AsyncClient, org: Org) -> list[str]:
    """Rows made by the app in one organisation; returns the URLs that show them."""
    team = (await client.post("/v1/teams", json={"name": "East"}, headers=org.auth())).json()
    user_id, _ = await org.add_user("rep", team_id=team["id"])
    first = (await client.post("/v1/leads", json={"email": "ann@example.com"}, headers=org.auth())).json()
    second = (
        await client.post(
            "/v1/leads", json={"email": "bo@example.com", "owner_id": user_id}, headers=org.auth()
        )
    ).json()
    account = (await client.post("/v1/accounts", json={"name": "ACME"}, headers=org.auth())).json()
    deal = await client.post(
        "/v1/deals",
        json={"name": "Big one", "account_id": account["id"], "amount": "1200.00", "currency": "EUR"},
        headers=org.auth(),
    )
    assert deal.status_code == 201, deal.text
    return [
        f"/v1/teams/{team['id']}",
        f"/v1/users/{user_id}",
        f"/v1/leads/{first['id']}",
        f"/v1/leads/{second['id']}",
        f"/v1/accounts/{account['id']}",
        f"/v1/deals/{deal.json()['id']}",
    ]


async def _answers(settings: Settings, url: str, orgs: list[Org], urls: list[list[str]]) -> list[Any]:
    """What the API answers for each URL, to its own organisation and to the other one."""
    state = AppState.open(settings.model_copy(update={"database_url": url}))
    try:
        transport = httpx.ASGITransport(app=create_app(settings, state=state))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            out = []
            for i, org in enumerate(orgs):
                other = orgs[1 - i]
                for path in urls[i]:
                    own = await client.get(path, headers=org.auth())
                    foreign = await client.get(path, headers=other.auth())
                    out.append((path, own.status_code, own.json(), foreign.status_code))
            return out
    finally:
        await state.close()


def is_head() -> bool:
    """Whether this migration is still the latest: the app's models follow the latest head, so
    they can only be run against the previous head's schema while nothing came after it."""
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_heads() == [REVISION]


async def _organisations_by_sql(url: str, count: int) -> list[uuid.UUID]:
    """Organisations written directly (the models may be ahead of this schema)."""
    conn = await asyncpg.connect(_dsn(url))
    try:
        ids = [uuid.uuid4() for _ in range(count)]
        for org_id in ids:
            await conn.execute(
                "INSERT INTO organisations (id, name, settings, created_at, updated_at, version)"
                " VALUES ($1, 'Org', '{}', now(), now(), 1)",
                org_id,
            )
        return ids
    finally:
        await conn.close()


@pytest.mark.slow
async def test_upgrade_from_the_previous_head_keeps_every_row_and_answer(
    settings: Settings, servers: Servers
) -> None:
    if not is_head():
        await _rows_and_keys_only(servers)
        return
    async with empty_database(servers) as url:
        await upgrade(url, previous_revision())
        state = AppState.open(settings.model_copy(update={"database_url": url}))
        try:
            transport = httpx.ASGITransport(app=create_app(settings, state=state))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                orgs = [await make_org(state, client) for _ in range(2)]
                urls = [await _through_the_api(client, org) for org in orgs]
        finally:
            await state.close()
        conn = await asyncpg.connect(_dsn(url))
        try:
            await fill_every_table(conn, [uuid.UUID(o.id) for o in orgs])
            before_rows, before_schema = await rows(conn), await schema(conn)
            assert len(before_rows.pop("organisations")) == 2
            assert all(len(r) >= 2 * ROWS_PER_ORG for r in before_rows.values()), before_rows.keys()
            assert await key_violations(conn) != []
        finally:
            await conn.close()
        before_answers = await _answers(settings, url, orgs, urls)
        assert [(a[1], a[3]) for a in before_answers] == [(200, 404)] * len(before_answers)

        await upgrade(url, "heads")
        conn = await asyncpg.connect(_dsn(url))
        try:
            assert {t: r for t, r in (await rows(conn)).items() if t != "organisations"} == before_rows
            assert await key_violations(conn) == []
            lead_a, lead_b = [
                await conn.fetchval("SELECT id FROM leads WHERE org_id = $1 LIMIT 1", uuid.UUID(o.id))
                for o in orgs
            ]
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute("UPDATE leads SET duplicate_of = $1 WHERE id = $2", lead_b, lead_a)
        finally:
            await conn.close()
        assert json.dumps(await _answers(settings, url, orgs, urls)) == json.dumps(before_answers)

        await downgrade(url, previous_revision())
        conn = await asyncpg.connect(_dsn(url))
        try:
            assert {t: r for t, r in (await rows(conn)).items() if t != "organisations"} == before_rows
            assert await schema(conn) == before_schema
        finally:
            await conn.close()


async def _rows_and_keys_only(servers: Servers) -> None:
    """The same upgrade and downgrade checks on rows and keys, without the app (later migrations
    changed the models); up to this migration, not the latest head."""
    async with empty_database(servers) as url:
        await upgrade(url, previous_revision())
        org_ids = await _organisations_by_sql(url, 2)
        conn = await asyncpg.connect(_dsn(url))
        try:
            await fill_every_table(conn, org_ids)
            before_rows, before_schema = await rows(conn), await schema(conn)
            assert await key_violations(conn) != []
        finally:
            await conn.close()
        await upgrade(url, REVISION)
        conn = await asyncpg.connect(_dsn(url))
        try:
            assert await rows(conn) == before_rows
            assert await key_violations(conn) == []
            lead_a, lead_b = [
                await conn.fetchval("SELECT id FROM leads WHERE org_id = $1 LIMIT 1", o) for o in org_ids
            ]
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await conn.execute("UPDATE leads SET duplicate_of = $1 WHERE id = $2", lead_b, lead_a)
        finally:
            await conn.close()
        await downgrade(url, previous_revision())
        conn = await asyncpg.connect(_dsn(url))
        try:
            assert await rows(conn) == before_rows
            assert await schema(conn) == before_schema
        finally:
            await conn.close()
