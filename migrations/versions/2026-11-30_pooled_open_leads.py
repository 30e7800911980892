"""leads: open leads without an owner, by organisation and age

An assignment job that is behind takes the organisation's oldest undecided pooled leads along
(`engine.assign_created_leads`). No index served that look-up: it read every lead of the
organisation through the primary key (3.6 ms at 3k leads, growing), or, with a generic plan on a
database holding another organisation of 1M leads, the whole table (265 ms a batch). This
partial index holds only the leads that wait for an owner, in `created_at` order, so the look-up
reads the backlog and nothing else; a lead leaves it when it gets an owner.

Revision ID: speed0004pooled
Revises: speed0003ownedload
Create Date: 2026-11-30 11:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0004pooled"
down_revision: str | None = "speed0003ownedload"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POOLED_OPEN = (
    "owner_id IS NULL AND status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)


def upgrade() -> None:
    op.execute(f"CREATE INDEX ix_leads_pooled_open ON leads (org_id, created_at) WHERE {POOLED_OPEN}")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_leads_pooled_open")
