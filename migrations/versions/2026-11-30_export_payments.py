"""change stamps and tombstones for payments and payment allocations

The collections entities join the incremental export: `payments` and `payment_allocations` get
change_xid and change_seq (column defaults on INSERT, `loudou_export_restamp` on UPDATE) with the
(org_id, change_xid, change_seq) index, and an AFTER DELETE trigger that leaves a tombstone in
deleted_rows, exactly as b1e7export001 does for the other exported tables. Allocations have no
updated_at (they are written once), so they are restamped without touching one.

Revision ID: export0001
Revises: b1e7export001
Create Date: 2026-11-30 03:15:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "export0001"
down_revision: str | None = "b1e7export001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> restamp mode ('touch' moves updated_at, 'plain' for tables without one)
STAMPED = {"payments": "touch", "payment_allocations": "plain"}

XID = "(pg_current_xact_id())::text::bigint"
SEQ = "nextval('export_change_seq'::regclass)"


def upgrade() -> None:
    for table, mode in STAMPED.items():
        # Existing rows get this migration's transaction id and sequence values in table order.
        op.add_column(table, sa.Column("change_xid", sa.BigInteger(), server_default=sa.text(XID), nullable=False))
        op.add_column(table, sa.Column("change_seq", sa.BigInteger(), server_default=sa.text(SEQ), nullable=False))
        op.create_index(f"ix_{table}_org_id_change_xid_change_seq", table, ["org_id", "change_xid", "change_seq"])
        op.execute(
            f"CREATE TRIGGER export_restamp BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION loudou_export_restamp('{mode}')"
        )
        op.execute(
            f"CREATE TRIGGER export_tombstone AFTER DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION loudou_export_tombstone('{table}')"
        )


def downgrade() -> None:
    for table in reversed(STAMPED):
        op.execute(f"DROP TRIGGER export_tombstone ON {table}")
        op.execute(f"DROP TRIGGER export_restamp ON {table}")
        op.drop_index(f"ix_{table}_org_id_change_xid_change_seq", table_name=table)
        op.drop_column(table, "change_seq")
        op.drop_column(table, "change_xid")
