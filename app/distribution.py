"""How the schema distributes on Citus, read from the live PostgreSQL catalog.

`loudou schema plan` prints `render(plan(await read_catalog(conn)))`; docs/scale.md carries that
output and a test compares the two, so the document cannot drift from the migrations. Every
table is one of: a reference table (replicated to every node), distributed by org_id (all in
one co-location group, so joins and foreign keys inside an organisation stay on one shard),
distributed by a column of its own, or local to the coordinator. The choices that are not
"distributed by org_id" are listed here with their reasons.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

TENANT_COLUMN = "org_id"

# Small, rarely written, read on every request before the organisation is known.
REFERENCE_TABLES: dict[str, str] = {
    "organisations": "the tenants themselves; every tenant row's org_id points at one",
    "api_keys": "a bearer token's hash is looked up before its organisation is known "
    "(unique on its own: uq_api_keys_key_hash)",
    "intake_sources": "an intake URL's public key names the source before its organisation is known "
    "(unique on its own: uq_intake_sources_key)",
}
# Tables distributed by a column of their own (their own co-location group).
OWN_DISTRIBUTION: dict[str, tuple[str, str]] = {
    "idempotency_keys": (
        "caller_hash",
        "claimed before authentication, so keyed by the caller (every key and look-up names caller_hash)",
    ),
}
# Tables that stay on the coordinator.
LOCAL_TABLES: dict[str, str] = {"alembic_version": "only migrations read it"}

CITUS_SET_NULL_ISSUE = "https://github.com/citusdata/citus/issues/7132"


@dataclass(frozen=True)
class ForeignKey:
    """One foreign-key constraint as the catalog has it."""

    name: str
    table: str
    target: str
    definition: str

    @property
    def sets_null(self) -> bool:
        """Whether its ON DELETE action is SET NULL (with or without a column list)."""
        return " ON DELETE SET NULL" in self.definition

    def without_set_null(self) -> str:
        """The same key with no ON DELETE action (NO ACTION)."""
        return re.sub(r" ON DELETE SET NULL( \([^)]*\))?", "", self.definition)


@dataclass
class Catalog:
    """What the plan needs from the catalog."""

    tables: list[str]
    tenant_tables: set[str]
    foreign_keys: list[ForeignKey]


@dataclass
class Plan:
    """The distribution of every table, in the order Citus needs."""

    reference: list[str] = field(default_factory=list)
    distributed: list[str] = field(default_factory=list)
    own: list[tuple[str, str]] = field(default_factory=list)
    local: list[str] = field(default_factory=list)
    dropped: list[ForeignKey] = field(default_factory=list)  # reference -> distributed
    no_action: list[ForeignKey] = field(default_factory=list)  # SET NULL Citus refuses
    deferred: list[ForeignKey] = field(default_factory=list)  # cycles: added after distribution


async def read_catalog(conn: AsyncConnection) -> Catalog:
    """Tables, which carry a NOT NULL org_id, and every foreign key, from the public schema."""
    tables = [
        row[0]
        for row in await conn.execute(
            text(
                "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                " AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY relname"
            )
        )
    ]
    tenant = {
        row[0]
        for row in await conn.execute(
            text(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND column_name = :col AND is_nullable = 'NO'"
            ),
            {"col": TENANT_COLUMN},
        )
    }
    fks = [
        ForeignKey(name=row[0], table=row[1], target=row[2], definition=row[3])
        for row in await conn.execute(
            text(
                "SELECT conname, conrelid::regclass::text, confrelid::regclass::text,"
                " pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 2, 1"
            )
        )
    ]
    return Catalog(tables=tables, tenant_tables=tenant, foreign_keys=fks)


def plan(catalog: Catalog) -> Plan:
    """Which table goes where, and which foreign keys Citus needs changed or postponed."""
    out = Plan()
    distributed: set[str] = set()
    out.reference = [t for t in REFERENCE_TABLES if t in catalog.tables]  # organisations first
    for table in catalog.tables:
        if table in REFERENCE_TABLES:
            continue
        elif table in OWN_DISTRIBUTION:
            out.own.append((table, OWN_DISTRIBUTION[table][0]))
        elif table in catalog.tenant_tables:
            distributed.add(table)
        else:
            out.local.append(table)
    reference = set(out.reference)
    depends: dict[str, list[ForeignKey]] = defaultdict(list)
    for fk in catalog.foreign_keys:
        if fk.table in reference and fk.target in distributed:
            out.dropped.append(fk)  # Citus: a reference table cannot point at a distributed one
            continue
        if fk.table in distributed and fk.sets_null and fk.target in distributed | reference:
            out.no_action.append(fk)
        if fk.table in distributed and fk.target in distributed and fk.target != fk.table:
            depends[fk.table].append(fk)
    # Referenced tables first; a key that would point at a table not yet distributed (a cycle,
    # such as teams.manager_id <-> users.team_id) is dropped before and added back after.
    placed: set[str] = set()
    remaining = sorted(distributed)
    while remaining:
        ready = [t for t in remaining if all(fk.target in placed for fk in depends[t])]
        if not ready:  # a cycle: start with the table most of the others point at
            wanted = {t: sum(fk.target == t for r in remaining for fk in depends[r]) for t in remaining}
            table = max(remaining, key=lambda t: (wanted[t], [-ord(c) for c in t]))
            ready = [table]
            out.deferred += [fk for fk in depends[table] if fk.target not in placed]
        for table in ready:
            out.distributed.append(table)
            placed.add(table)
            remaining.remove(table)
    return out


def render(p: Plan) -> str:
    """The plan as the SQL to run on the Citus coordinator, after `loudou migrate`."""
    lines = ["-- Generated by `loudou schema plan` from the migrated schema; do not edit by hand.", ""]
    lines.append("-- 1. Foreign keys Citus cannot hold as they are.")
    lines.append("-- A reference table cannot point at a distributed table (enforced by the services):")
    lines += [f"ALTER TABLE {fk.table} DROP CONSTRAINT {fk.name};" for fk in p.dropped]
    lines.append(f"-- ON DELETE SET NULL on a key that includes org_id ({CITUS_SET_NULL_ISSUE}):")
    lines.append("-- kept as a plain reference check; the reference must be cleared before the delete.")
    for fk in p.no_action:
        if fk in p.deferred:
            continue
        lines.append(
            f"ALTER TABLE {fk.table} DROP CONSTRAINT {fk.name},"
            f" ADD CONSTRAINT {fk.name} {fk.without_set_null()};"
        )
    lines.append("-- Cycles: dropped here, added back in step 5.")
    lines += [f"ALTER TABLE {fk.table} DROP CONSTRAINT {fk.name};" for fk in p.deferred]
    lines += ["", "-- 2. Reference tables (replicated to every node)."]
    for table in p.reference:
        lines.append(f"SELECT create_reference_table('{table}');  -- {REFERENCE_TABLES[table]}")
    lines += ["", f"-- 3. Tenant tables: distributed by {TENANT_COLUMN}, one co-location group."]
    if p.distributed:
        anchor = p.distributed[0]
        lines.append(f"SELECT create_distributed_table('{anchor}', '{TENANT_COLUMN}');")
        for table in p.distributed[1:]:
            lines.append(
                f"SELECT create_distributed_table('{table}', '{TENANT_COLUMN}', colocate_with => '{anchor}');"
            )
    lines += ["", "-- 4. Tables distributed by a column of their own."]
    for table, column in p.own:
        lines.append(
            f"SELECT create_distributed_table('{table}', '{column}', colocate_with => 'none');"
            f"  -- {OWN_DISTRIBUTION[table][1]}"
        )
    lines += ["", "-- 5. The cycles' foreign keys, back."]
    for fk in p.deferred:
        definition = fk.without_set_null() if fk in p.no_action else fk.definition
        lines.append(f"ALTER TABLE {fk.table} ADD CONSTRAINT {fk.name} {definition};")
    lines += ["", "-- Local to the coordinator:"]
    lines += [f"--   {table}: {LOCAL_TABLES.get(table, 'not a tenant table')}" for table in p.local]
    return "\n".join(lines) + "\n"
