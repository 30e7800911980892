"""Time the tenant-keys migration (2026-11-30_tenant_keys) on a database full of leads and deals.

Builds a database at the revision before it, loads organisations, users, teams, intake sources,
pipelines, stages and accounts, then `--leads` leads and `--deals` deals by COPY (every foreign
key pointing into the row's own organisation, one lead in ten marked a duplicate of an older
one), runs `alembic upgrade` to the head and prints one table. `--downgrade` times the way back
too. PostgreSQL: as the other benchmarks find it (bench/servers.py); the database is dropped
at the end.

    .venv/bin/python -m bench.migrate_keys --leads 1000000 --deals 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from app.migrate import downgrade, revision_before, upgrade
from bench.servers import bench_servers, database_dsn

REVISION = "b1c6tenantkeys"

BATCH = 100_000
# Rows per organisation of the small tables.
PER_ORG = {"users": 5, "teams": 2, "intake_sources": 1, "pipelines": 1, "stages": 7, "accounts": 20}


async def main() -> None:
    """Build, load, migrate, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--downgrade", action="store_true", help="time the downgrade too")
    args = parser.parse_args()
    with bench_servers() as (server, _redis):
        name = f"loudou_bench_keys_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(server)
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = database_dsn(server, name)
        url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        try:
            await upgrade(url, revision_before(REVISION))
            conn = await asyncpg.connect(dsn)
            try:
                started = time.perf_counter()
                await load(conn, args)
                loaded = time.perf_counter() - started
                size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
            finally:
                await conn.close()
            started = time.perf_counter()
            await upgrade(url, "heads")
            upgraded = time.perf_counter() - started
            back = None
            if args.downgrade:
                started = time.perf_counter()
                await downgrade(url, revision_before(REVISION))
                back = time.perf_counter() - started
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    print()
    print("| leads | deals | organisations | database | load (COPY) | upgrade | downgrade |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.leads:,} | {args.deals:,} | {args.orgs} | {size} | {loaded:.1f} s | {upgraded:.1f} s "
        f"| {f'{back:.1f} s' if back is not None else '-'} |"
    )


def _filler(data_type: str, length: int | None) -> Any:
    """One value of a NOT NULL column without a default (the same for every row)."""
    return {
        "text": "x",
        "character varying": "x"[: length or 1],
        "uuid": uuid.uuid4(),
        "integer": 1,
        "numeric": Decimal(1),
        "boolean": False,
        "timestamp with time zone": dt.datetime.now(dt.UTC),
        "date": dt.date.today(),
        "jsonb": "{}",
        "bytea": b"",
    }[data_type]


async def load(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    """Every table the big ones point at, then the leads and deals, all by COPY."""
    columns: dict[str, list[asyncpg.Record]] = {}
    for row in await conn.fetch(
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ):
        columns.setdefault(row["table_name"], []).append(row)
    references = {
        (row["tbl"], row["col"]): row["target"]
        for row in await conn.fetch(
            "SELECT c.conrelid::regclass::text AS tbl, a.attname AS col,"
            " c.confrelid::regclass::text AS target FROM pg_constraint c"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)"
            " WHERE c.contype = 'f' AND a.attname <> 'org_id'"
        )
    }
    orgs = [uuid.uuid4() for _ in range(args.orgs)]
    ids: dict[str, dict[uuid.UUID, list[uuid.UUID]]] = {}

    async def copy(table: str, count: int, per_org: bool) -> None:
        cols = columns[table]
        names = [c["column_name"] for c in cols]
        fixed = {
            c["column_name"]: _filler(c["data_type"], c["character_maximum_length"])
            for c in cols
            if c["is_nullable"] == "NO" and c["column_default"] is None
        }
        made: dict[uuid.UUID, list[uuid.UUID]] = {org: [] for org in orgs}
        for start in range(0, count, BATCH):
            records = []
            for i in range(start, min(start + BATCH, count)):
                org = orgs[i // (count // len(orgs)) % len(orgs)] if per_org else orgs[i % len(orgs)]
                own = made[org]
                row: list[Any] = []
                for c in cols:
                    column = c["column_name"]
                    target = references.get((table, column))
                    if column == "id":
                        value: Any = uuid.uuid4()
                        own.append(value)
                    elif column == "org_id":
                        value = org
                    elif target == table:  # one in ten is a duplicate of an older row
                        value = own[-2] if len(own) > 1 and i % 10 == 0 else None
                    elif target is not None and target in ids:
                        pool = ids[target][org]
                        value = pool[i % len(pool)]
                    elif target is not None:
                        value = None
                    elif column in ("email", "name", "key", "key_hash", "sku", "number", "caller_hash"):
                        value = f"{column}-{i}@bench.test"[: c["character_maximum_length"] or 64]
                    else:
                        value = fixed.get(column)
                    row.append(value)
                records.append(tuple(row))
            await conn.copy_records_to_table(table, records=records, columns=names)
        ids[table] = made

    await conn.copy_records_to_table(
        "organisations",
        records=[
            tuple(
                {"id": org, "name": f"Org {n}"}.get(c["column_name"])
                or (
                    _filler(c["data_type"], c["character_maximum_length"])
                    if c["is_nullable"] == "NO"
                    else None
                )
                for c in columns["organisations"]
            )
            for n, org in enumerate(orgs)
        ],
        columns=[c["column_name"] for c in columns["organisations"]],
    )
    for table in ("teams", "users", "intake_sources", "pipelines", "stages", "accounts"):
        await copy(table, PER_ORG[table] * len(orgs), per_org=True)
    await copy("leads", args.leads, per_org=False)
    await copy("deals", args.deals, per_org=False)
    await conn.execute("ANALYZE")


if __name__ == "__main__":
    asyncio.run(main())
