"""change stamps and tombstones for the incremental export

Every exported table gets change_xid (the writing transaction's 64-bit id) and change_seq (a
shared sequence), set by column defaults on INSERT and by a trigger on UPDATE, with an
(org_id, change_xid, change_seq) index; deletions leave tombstones in deleted_rows (AFTER DELETE
triggers). The export reads rows below its snapshot's xmin in (change_xid, change_seq) order, so
a transaction that commits late can never land behind a position already handed out.

Revision ID: b1e7export001
Revises: c9metrics0001
Create Date: 2026-11-30 00:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b1e7export001"
down_revision: str | None = "c9metrics0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAMPED = (
    "leads",
    "activities",
    "deals",
    "deal_stage_history",
    "deal_field_history",
    "quotes",
    "orders",
    "installments",
    "accounts",
    "contacts",
    "users",
    "teams",
)
# Tables without updated_at (append-only histories) are restamped without touching it.
WITHOUT_UPDATED_AT = ("deal_stage_history", "deal_field_history")
# Plain tables: the tombstone names the table as the entity (activities and quotes have their own).
PLAIN_TOMBSTONES = tuple(t for t in STAMPED if t not in ("activities", "quotes"))

XID = "(pg_current_xact_id())::text::bigint"
SEQ = "nextval('export_change_seq'::regclass)"

FUNCTIONS = r"""
-- A write that changes nothing keeps its stamp; any other UPDATE gets a new one, and updated_at
-- moves when the application left it as it was.
CREATE FUNCTION loudou_export_restamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    NEW.change_xid := pg_current_xact_id()::text::bigint;
    NEW.change_seq := nextval('export_change_seq');
    IF TG_ARGV[0] = 'touch' AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;


-- The export's horizon: rows written by transactions below it are final. It is the snapshot's
-- xmin, except that transactions pg_stat_activity shows in another database are passed over
-- (they cannot write here); one it cannot place (ended since, or not visible to this role) counts.
CREATE FUNCTION loudou_export_horizon() RETURNS bigint LANGUAGE sql STABLE AS $$
    WITH snapshot AS (SELECT pg_current_snapshot() AS snap),
    elsewhere AS (
        SELECT backend_xid::text::bigint AS xid32
        FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL
          AND datid IS NOT NULL
          AND datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
    )
    SELECT LEAST(
        pg_snapshot_xmax(snap)::text::bigint,
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(snap) AS x
         WHERE x::text::bigint % 4294967296 NOT IN (SELECT xid32 FROM elsewhere)))
    FROM snapshot
$$;


-- One tombstone; none while the organisation itself is being deleted (nothing left to sync).
CREATE FUNCTION loudou_export_bury(org uuid, entity text, row_id uuid, reason text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM organisations WHERE id = org) THEN
        INSERT INTO deleted_rows (org_id, id, entity, row_id, reason)
        VALUES (org, gen_random_uuid(), entity, row_id, reason);
    END IF;
END $$;


CREATE FUNCTION loudou_export_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM loudou_export_bury(OLD.org_id, TG_ARGV[0], OLD.id, 'deleted');
    RETURN OLD;
END $$;


-- Activities of kind task are the `tasks` entity, the others `activities`.
CREATE FUNCTION loudou_export_tombstone_activity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM loudou_export_bury(
        OLD.org_id, CASE WHEN OLD.kind = 'task' THEN 'tasks' ELSE 'activities' END, OLD.id, 'deleted');
    RETURN OLD;
END $$;


-- The id of a quote line: a UUID made from the quote's id and the line's 1-based position.
CREATE FUNCTION loudou_quote_line_id(quote_id uuid, line_position bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5(quote_id::text || ':' || line_position::text)::uuid
$$;


-- A deleted quote takes its lines with it; a draft edited down to fewer lines loses the rest.
CREATE FUNCTION loudou_export_tombstone_quote() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reason text;
    kept bigint := 0;
    old_count bigint := jsonb_array_length(COALESCE(OLD.lines, '[]'::jsonb));
BEGIN
    IF TG_OP = 'DELETE' THEN
        reason := 'deleted';
        PERFORM loudou_export_bury(OLD.org_id, 'quotes', OLD.id, reason);
    ELSE
        reason := 'line_removed';
        kept := jsonb_array_length(COALESCE(NEW.lines, '[]'::jsonb));
    END IF;
    FOR n IN kept + 1 .. old_count LOOP
        PERFORM loudou_export_bury(OLD.org_id, 'quote_lines', loudou_quote_line_id(OLD.id, n), reason);
    END LOOP;
    RETURN OLD;
END $$;


-- A soft-deleted lead's timeline leaves the export with it (its tasks stay, as /v1/tasks shows).
CREATE FUNCTION loudou_export_bury_lead_activities() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_rows (org_id, id, entity, row_id, reason)
    SELECT a.org_id, gen_random_uuid(), 'activities', a.id, 'lead_deleted'
    FROM activities a
    WHERE a.org_id = NEW.org_id AND a.lead_id = NEW.id AND a.kind <> 'task';
    RETURN NEW;
END $$;
"""

DROP_FUNCTIONS = (
    "loudou_export_bury_lead_activities()",
    "loudou_export_tombstone_quote()",
    "loudou_quote_line_id(uuid, bigint)",
    "loudou_export_tombstone_activity()",
    "loudou_export_tombstone()",
    "loudou_export_bury(uuid, text, uuid, text)",
    "loudou_export_restamp()",
    "loudou_export_horizon()",
)


def upgrade() -> None:
    op.execute("CREATE SEQUENCE export_change_seq AS bigint")
    op.create_table(
        "deleted_rows",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("row_id", sa.Uuid(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("change_xid", sa.BigInteger(), server_default=sa.text(XID), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), server_default=sa.text(SEQ), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_deleted_rows_org_id_organisations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deleted_rows")),
    )
    op.create_index(
        "ix_deleted_rows_org_id_entity_change_xid_change_seq",
        "deleted_rows",
        ["org_id", "entity", "change_xid", "change_seq"],
    )
    # One statement per call: asyncpg prepares what it sends, and refuses several commands at once.
    for statement in FUNCTIONS.split("\n\n\n"):
        op.execute(statement)
    for table in STAMPED:
        # Existing rows get this migration's transaction id and sequence values in table order.
        op.add_column(table, sa.Column("change_xid", sa.BigInteger(), server_default=sa.text(XID), nullable=False))
        op.add_column(table, sa.Column("change_seq", sa.BigInteger(), server_default=sa.text(SEQ), nullable=False))
        op.create_index(f"ix_{table}_org_id_change_xid_change_seq", table, ["org_id", "change_xid", "change_seq"])
        mode = "plain" if table in WITHOUT_UPDATED_AT else "touch"
        op.execute(
            f"CREATE TRIGGER export_restamp BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION loudou_export_restamp('{mode}')"
        )
    for table in PLAIN_TOMBSTONES:
        op.execute(
            f"CREATE TRIGGER export_tombstone AFTER DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION loudou_export_tombstone('{table}')"
        )
    op.execute(
        "CREATE TRIGGER export_tombstone AFTER DELETE ON activities "
        "FOR EACH ROW EXECUTE FUNCTION loudou_export_tombstone_activity()"
    )
    op.execute(
        "CREATE TRIGGER export_tombstone AFTER DELETE ON quotes "
        "FOR EACH ROW EXECUTE FUNCTION loudou_export_tombstone_quote()"
    )
    op.execute(
        "CREATE TRIGGER export_tombstone_lines AFTER UPDATE OF lines ON quotes FOR EACH ROW "
        "WHEN (jsonb_array_length(COALESCE(NEW.lines, '[]'::jsonb)) "
        "< jsonb_array_length(COALESCE(OLD.lines, '[]'::jsonb))) "
        "EXECUTE FUNCTION loudou_export_tombstone_quote()"
    )
    op.execute(
        "CREATE TRIGGER export_bury_activities AFTER UPDATE OF deleted_at ON leads FOR EACH ROW "
        "WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL) "
        "EXECUTE FUNCTION loudou_export_bury_lead_activities()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER export_bury_activities ON leads")
    op.execute("DROP TRIGGER export_tombstone_lines ON quotes")
    for table in STAMPED:
        op.execute(f"DROP TRIGGER export_tombstone ON {table}")
        op.execute(f"DROP TRIGGER export_restamp ON {table}")
        op.drop_index(f"ix_{table}_org_id_change_xid_change_seq", table_name=table)
        op.drop_column(table, "change_seq")
        op.drop_column(table, "change_xid")
    for function in DROP_FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
    op.drop_index("ix_deleted_rows_org_id_entity_change_xid_change_seq", table_name="deleted_rows")
    op.drop_table("deleted_rows")
    op.execute("DROP SEQUENCE export_change_seq")
