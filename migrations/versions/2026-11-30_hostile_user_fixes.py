"""issue 10: partial indexes for the sweeps: SLA decisions still waiting, open tasks with a due
time, owned open leads

The SLA, overdue-task and recycle sweeps run every few seconds; each index holds only the rows
its sweep can act on, so their cost follows the open work, not the history. The full index on
assignment_decisions.sla_due_at (every decision ever made) is replaced by the partial one.
On a large production database, build them first by hand with CREATE INDEX CONCURRENTLY (same
names and predicates); the migration then finds them (IF NOT EXISTS) and only drops the old one.

Revision ID: b6c1hostile001
Revises: b1c6tenantkeys
Create Date: 2026-11-30 01:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b6c1hostile001"
down_revision: str | None = "b1c6tenantkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED_OPEN = (
    "owner_id IS NOT NULL AND status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)


def upgrade() -> None:
    op.create_index(
        "ix_assignment_decisions_sla_pending",
        "assignment_decisions",
        ["sla_due_at"],
        postgresql_where=sa.text("sla_handled_at IS NULL AND sla_due_at IS NOT NULL"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_activities_open_due",
        "activities",
        ["due_at"],
        postgresql_where=sa.text("done_at IS NULL AND due_at IS NOT NULL"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_leads_owned_open",
        "leads",
        ["org_id"],
        postgresql_where=sa.text(OWNED_OPEN),
        if_not_exists=True,
    )
    op.drop_index(
        "ix_assignment_decisions_sla_due_at",
        table_name="assignment_decisions",
        if_exists=True,
    )


def downgrade() -> None:
    op.create_index(
        "ix_assignment_decisions_sla_due_at",
        "assignment_decisions",
        ["sla_due_at"],
        if_not_exists=True,
    )
    op.drop_index("ix_leads_owned_open", table_name="leads", if_exists=True)
    op.drop_index("ix_activities_open_due", table_name="activities", if_exists=True)
    op.drop_index(
        "ix_assignment_decisions_sla_pending",
        table_name="assignment_decisions",
        if_exists=True,
    )
