"""keys that carry the tenant: primary keys (org_id, id), unique keys and foreign keys with org_id

Every tenant table's primary key becomes (org_id, <its old key>); the two unique constraints
without org_id that are per organisation gain it; every foreign key between tenant tables
becomes (org_id, x_id) -> (org_id, id), so the database refuses a row pointing at another
organisation's row, and the schema distributes on Citus by org_id (docs/scale.md). The
single-column org_id indexes go: the primary key starts with org_id.

Kept global on purpose (tests/test_schema_keys.py lists them with their reasons):
api_keys.key_hash and intake_sources.key (looked up before the organisation is known);
idempotency_keys is keyed by the caller (its primary key becomes (caller_hash, id)).

ON DELETE SET NULL becomes `SET NULL (x_id)` (PostgreSQL 15+): only x_id is cleared, never
org_id. Ids do not change. Foreign keys that other migrations made composite against a
`uq_<table>_org_id_id` stand-in are moved onto the new primary key, and the stand-in dropped
(the downgrade puts both back).

Revision ID: b1c6tenantkeys
Revises: b1leadphone64
Create Date: 2026-11-30 00:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "b1c6tenantkeys"
down_revision: str | None = "b1leadphone64"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tenant tables of the previous head and the column(s) their primary key had before org_id.
TABLES: dict[str, str] = {
    "accounts": "id",
    "activities": "id",
    "api_keys": "id",
    "assignment_cursors": "rule_id",
    "assignment_decisions": "id",
    "assignment_rules": "id",
    "audit_log": "id",
    "contacts": "id",
    "deal_field_history": "id",
    "deal_stage_history": "id",
    "deals": "id",
    "document_counters": "id",
    "followup_policies": "id",
    "inbound_events": "id",
    "installments": "id",
    "intake_sources": "id",
    "job_runs": "job_key",
    "leads": "id",
    "orders": "id",
    "outbox": "id",
    "pipelines": "id",
    "products": "id",
    "quotes": "id",
    "scoring_rules": "id",
    "stages": "id",
    "teams": "id",
    "users": "id",
    "webhook_attempts": "id",
    "webhook_deliveries": "id",
    "webhook_subscriptions": "id",
}

# (table, column, referenced table, ON DELETE, deferrable initially deferred)
FOREIGN_KEYS: list[tuple[str, str, str, str, bool]] = [
    ("accounts", "owner_id", "users", "SET NULL", False),
    ("activities", "created_by", "users", "SET NULL", False),
    ("activities", "deal_id", "deals", "CASCADE", False),
    ("activities", "inbound_event_id", "inbound_events", "SET NULL", True),
    ("activities", "lead_id", "leads", "CASCADE", False),
    ("activities", "owner_id", "users", "SET NULL", False),
    ("api_keys", "user_id", "users", "CASCADE", False),
    ("assignment_cursors", "rule_id", "assignment_rules", "CASCADE", False),
    ("assignment_decisions", "lead_id", "leads", "CASCADE", False),
    ("assignment_rules", "target_team_id", "teams", "SET NULL", False),
    ("contacts", "account_id", "accounts", "SET NULL", False),
    ("contacts", "owner_id", "users", "SET NULL", False),
    ("deal_field_history", "by_user_id", "users", "SET NULL", False),
    ("deal_field_history", "deal_id", "deals", "CASCADE", False),
    ("deal_stage_history", "by_user_id", "users", "SET NULL", False),
    ("deal_stage_history", "deal_id", "deals", "CASCADE", False),
    ("deal_stage_history", "from_stage_id", "stages", "RESTRICT", False),
    ("deal_stage_history", "pipeline_id", "pipelines", "CASCADE", False),
    ("deal_stage_history", "to_stage_id", "stages", "RESTRICT", False),
    ("deals", "account_id", "accounts", "SET NULL", False),
    ("deals", "contact_id", "contacts", "SET NULL", False),
    ("deals", "owner_id", "users", "SET NULL", False),
    ("deals", "pipeline_id", "pipelines", "RESTRICT", False),
    ("deals", "stage_id", "stages", "RESTRICT", False),
    ("followup_policies", "deal_stage_id", "stages", "CASCADE", False),
    ("inbound_events", "lead_id", "leads", "SET NULL", False),
    ("inbound_events", "source_id", "intake_sources", "SET NULL", False),
    ("installments", "order_id", "orders", "CASCADE", False),
    ("intake_sources", "default_owner_id", "users", "SET NULL", False),
    ("intake_sources", "default_team_id", "teams", "SET NULL", False),
    ("leads", "duplicate_of", "leads", "SET NULL", False),
    ("leads", "owner_id", "users", "SET NULL", False),
    ("leads", "possible_duplicate_of", "leads", "SET NULL", False),
    ("leads", "source_id", "intake_sources", "SET NULL", False),
    ("leads", "team_id", "teams", "SET NULL", False),
    ("orders", "account_id", "accounts", "SET NULL", False),
    ("orders", "deal_id", "deals", "RESTRICT", False),
    ("orders", "owner_id", "users", "SET NULL", False),
    ("orders", "quote_id", "quotes", "RESTRICT", False),
    ("quotes", "approved_by_id", "users", "SET NULL", False),
    ("quotes", "created_by_id", "users", "SET NULL", False),
    ("quotes", "deal_id", "deals", "CASCADE", False),
    ("quotes", "previous_revision_id", "quotes", "SET NULL", False),
    ("quotes", "superseded_by_id", "quotes", "SET NULL", False),
    ("stages", "pipeline_id", "pipelines", "CASCADE", False),
    ("teams", "manager_id", "users", "SET NULL", False),
    ("users", "team_id", "teams", "SET NULL", False),
    ("webhook_attempts", "delivery_id", "webhook_deliveries", "CASCADE", False),
    ("webhook_deliveries", "subscription_id", "webhook_subscriptions", "CASCADE", False),
]

# Per-organisation unique keys that lacked org_id: (table, columns without org_id).
UNIQUES: list[tuple[str, tuple[str, ...]]] = [
    ("installments", ("order_id", "sequence")),
    ("webhook_deliveries", ("subscription_id", "outbox_id")),
]


# Stand-in UNIQUE (org_id, id) constraints (uq_<table>_org_id_id) that earlier migrations added
# so that their new tables could reference these tables by (org_id, id): the primary key covers
# them now, so the upgrade drops them and the downgrade puts them back.
STAND_INS: tuple[str, ...] = ()


def _fk_name(table: str, column: str, target: str) -> str:
    return f"fk_{table}_{column}_{target}"


def _uq_name(table: str, columns: tuple[str, ...]) -> str:
    return f"uq_{table}_{'_'.join(columns)}"


def _other_foreign_keys() -> list[tuple[str, str, str]]:
    """Foreign keys onto these tables that this migration does not own (tables added by other
    migrations, born composite): (table, name, definition), to be dropped and put back as is."""
    ours = {_fk_name(t, c, r) for t, c, r, _, _ in FOREIGN_KEYS}
    rows = op.get_bind().execute(
        text(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c"
            " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
            " AND c.confrelid::regclass::text = ANY(:tables)"
            " ORDER BY 1, 2"
        ),
        {"tables": list(TABLES)},
    )
    return [(t, n, d) for t, n, d in rows if n not in ours]


def _drop_foreign_keys(others: list[tuple[str, str, str]]) -> None:
    for table, name, _ in others:
        op.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for table, column, target, _, _ in FOREIGN_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {_fk_name(table, column, target)}")


def upgrade() -> None:
    # Index builds of a large table sort in memory rather than on disk.
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    others = _other_foreign_keys()
    _drop_foreign_keys(others)
    for table, key in TABLES.items():
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT pk_{table},"
            f" ADD CONSTRAINT pk_{table} PRIMARY KEY (org_id, {key})"
        )
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS uq_{table}_org_id_id")
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_org_id")
    for table, columns in UNIQUES:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {_uq_name(table, columns)},"
            f" ADD CONSTRAINT {_uq_name(table, ('org_id', *columns))} UNIQUE (org_id, {', '.join(columns)})"
        )
    for table, column, target, ondelete, deferred in FOREIGN_KEYS:
        action = f"SET NULL ({column})" if ondelete == "SET NULL" else ondelete
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {_fk_name(table, column, target)}"
            f" FOREIGN KEY (org_id, {column}) REFERENCES {target} (org_id, id) ON DELETE {action}"
            + (" DEFERRABLE INITIALLY DEFERRED" if deferred else "")
        )
    for table, name, definition in others:
        op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
    op.execute(
        "ALTER TABLE idempotency_keys DROP CONSTRAINT pk_idempotency_keys,"
        " ADD CONSTRAINT pk_idempotency_keys PRIMARY KEY (caller_hash, id)"
    )


def downgrade() -> None:
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    op.execute(
        "ALTER TABLE idempotency_keys DROP CONSTRAINT pk_idempotency_keys,"
        " ADD CONSTRAINT pk_idempotency_keys PRIMARY KEY (id)"
    )
    others = _other_foreign_keys()
    _drop_foreign_keys(others)
    for table, columns in UNIQUES:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {_uq_name(table, ('org_id', *columns))},"
            f" ADD CONSTRAINT {_uq_name(table, columns)} UNIQUE ({', '.join(columns)})"
        )
    for table, key in TABLES.items():
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} PRIMARY KEY ({key})"
        )
        op.execute(f"CREATE INDEX ix_{table}_org_id ON {table} (org_id)")
    for table, column, target, ondelete, deferred in FOREIGN_KEYS:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {_fk_name(table, column, target)}"
            f" FOREIGN KEY ({column}) REFERENCES {target} (id) ON DELETE {ondelete}"
            + (" DEFERRABLE INITIALLY DEFERRED" if deferred else "")
        )
    # Keys of later tables that point at (org_id, id) need that pair unique again: the stand-in
    # constraint they were created against before this migration.
    targets = set(STAND_INS)
    for _, _, definition in others:
        target, columns = definition.split(" REFERENCES ", 1)[1].split(")", 1)[0].split("(", 1)
        if columns.replace(" ", "") == "org_id,id":
            targets.add(target.strip().strip('"'))
    for target in sorted(targets):
        op.execute(f"ALTER TABLE {target} ADD CONSTRAINT uq_{target}_org_id_id UNIQUE (org_id, id)")
    for table, name, definition in others:
        op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
