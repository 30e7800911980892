"""The migrated schema keeps every tenant inside its own keys (DESIGN §10, issue 16).

Read from the PostgreSQL catalog after the migrations ran from empty: every table carrying
org_id has it in its primary key, in every unique constraint and unique index, and on both
sides of every foreign key to another tenant table, at the same position. A table added later
is checked the day it is added. The deliberate exceptions are listed here with their reasons.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import Org

# Unique keys that stay global on purpose: each is looked up before the organisation is known.
# On Citus their tables are reference tables (docs/scale.md, app/distribution.py).
GLOBAL_UNIQUE = {
    "uq_api_keys_key_hash": "a bearer token's hash names one key across all organisations",
    "uq_intake_sources_key": "an intake URL's public key names the source (and so the organisation)",
}
# Tables whose keys carry another column than org_id: the column every key must include.
OWN_KEY_COLUMN = {
    "idempotency_keys": "caller_hash",  # claimed before authentication: keyed by the caller
}

_KEYS = """
SELECT c.conrelid::regclass::text AS tbl, c.conname AS name, c.contype::text AS kind,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS cols,
       c.confrelid::regclass::text AS target,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS target_cols,
       c.confdeltype::text AS on_delete,
       ARRAY(SELECT a.attname::text FROM unnest(c.confdelsetcols) k(n)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n) AS set_null_cols
FROM pg_constraint c
WHERE c.connamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.contype IN ('p', 'u', 'f')
UNION ALL
SELECT i.indrelid::regclass::text, ci.relname::text, 'i',
       ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
       NULL, NULL, NULL, NULL
FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid
WHERE ci.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND i.indisunique
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


async def key_violations(conn: asyncpg.Connection, schema: str = "public") -> list[str]:
    """Every key of a tenant table that lacks its tenant column, as readable lines."""
    tenant = {
        row["table_name"]
        for row in await conn.fetch(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND column_name = 'org_id'",
            schema,
        )
    }

    def key_column(table: str) -> str:
        return OWN_KEY_COLUMN.get(table.split(".")[-1], "org_id")

    problems = []
    for row in await conn.fetch(_KEYS, schema):
        table = row["tbl"]
        if table.split(".")[-1] not in tenant:
            continue
        column, cols = key_column(table), list(row["cols"])
        if row["kind"] in ("p", "u", "i"):
            if column not in cols and row["name"] not in GLOBAL_UNIQUE:
                problems.append(f"{table}: {row['name']} {cols} lacks {column}")
            continue
        target = row["target"]
        if target.split(".")[-1] not in tenant:
            continue  # e.g. org_id -> organisations
        target_cols = list(row["target_cols"])
        paired = "org_id" in cols and "org_id" in target_cols
        if not paired or cols.index("org_id") != target_cols.index("org_id"):
            problems.append(f"{table}: {row['name']} {cols} -> {target} {target_cols} does not pair org_id")
        elif row["on_delete"] == "n" and "org_id" in (row["set_null_cols"] or cols):
            problems.append(f"{table}: {row['name']} ON DELETE SET NULL would clear org_id")
    return problems


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the session's (migrated) database."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        yield connection
    finally:
        await connection.close()


async def test_every_tenant_key_carries_org_id(conn: asyncpg.Connection) -> None:
    assert await key_violations(conn) == []


async def test_the_global_exceptions_are_still_there(conn: asyncpg.Connection) -> None:
    names = {row[0] for row in await conn.fetch("SELECT conname FROM pg_constraint WHERE contype = 'u'")}
    assert set(GLOBAL_UNIQUE) <= names, "drop an exception from the list once its key is gone"
    pk = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_idempotency_keys'"
    )
    assert pk == "PRIMARY KEY (caller_hash, id)"


async def test_the_check_finds_keys_without_org_id(conn: asyncpg.Connection) -> None:
    schema = f"keys_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        await conn.execute(
            f"CREATE TABLE {schema}.parent (org_id uuid NOT NULL, id uuid PRIMARY KEY, code text UNIQUE);"
            f"CREATE TABLE {schema}.child (org_id uuid NOT NULL, id uuid, parent_id uuid"
            f" REFERENCES {schema}.parent (id), PRIMARY KEY (org_id, id));"
            f"CREATE UNIQUE INDEX ix_child_parent ON {schema}.child (parent_id)"
        )
        found = await key_violations(conn, schema)
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert len(found) == 4, found  # parent's pk and unique, child's unique index and foreign key
    assert any("child_parent_id_fkey" in line for line in found)


async def test_database_refuses_a_reference_to_another_organisations_row(
    conn: asyncpg.Connection, org: Org, other_org: Org
) -> None:
    mine = (await org.client.post("/v1/leads", json={"email": "a@example.com"}, headers=org.auth())).json()
    theirs = (
        await org.client.post("/v1/leads", json={"email": "b@example.com"}, headers=other_org.auth())
    ).json()
    assert mine["org_id"] == org.id and theirs["org_id"] == other_org.id
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(
            "UPDATE leads SET possible_duplicate_of = $3 WHERE org_id = $1 AND id = $2",
            uuid.UUID(org.id),
            uuid.UUID(mine["id"]),
            uuid.UUID(theirs["id"]),
        )
    insert_team = (
        "INSERT INTO teams (id, org_id, name, manager_id, created_at, updated_at, version)"
        " VALUES ($1, $2, $3, $4, now(), now(), 1)"
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await conn.execute(
            insert_team, uuid.uuid4(), uuid.UUID(org.id), "Poached", uuid.UUID(other_org.admin_id)
        )
    # The same row with a manager of its own organisation is accepted.
    await conn.execute(insert_team, uuid.uuid4(), uuid.UUID(org.id), "Own", uuid.UUID(org.admin_id))


async def test_deleting_a_referenced_row_clears_the_reference_not_the_organisation(
    conn: asyncpg.Connection, org: Org
) -> None:
    team = (await org.client.post("/v1/teams", json={"name": "Gone soon"}, headers=org.auth())).json()
    user_id, _ = await org.add_user("rep", team_id=team["id"])
    await conn.execute(
        "DELETE FROM teams WHERE org_id = $1 AND id = $2", uuid.UUID(org.id), uuid.UUID(team["id"])
    )
    row = await conn.fetchrow("SELECT org_id, team_id FROM users WHERE id = $1", uuid.UUID(user_id))
    assert row is not None
    assert (row["org_id"], row["team_id"]) == (uuid.UUID(org.id), None)
