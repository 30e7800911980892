"""leads: owned open leads indexed by owner, with the time each was assigned

Each assignment batch reads its candidates' load: `count(*), max(assigned_at)` of the open leads
each candidate owns. `ix_leads_owned_open` was `(org_id)`, so that read went through every owned
open lead of the organisation and fetched each row for its owner (7 ms a batch at 20k leads, and
growing with them). Keyed `(org_id, owner_id)` and carrying `assigned_at`, it reads only the
candidates' own open leads, from the index. The recycle sweep reads the same partial index as
before.

Revision ID: speed0003ownedload
Revises: speed0002fuzzapart
Create Date: 2026-11-30 10:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "speed0003ownedload"
down_revision: str | None = "speed0002fuzzapart"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED_OPEN = (
    "owner_id IS NOT NULL AND status IN ('new', 'working', 'qualified')"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
)


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_leads_owned_open")
    op.execute(
        f"CREATE INDEX ix_leads_owned_open ON leads (org_id, owner_id) INCLUDE (assigned_at) WHERE {OWNED_OPEN}"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_leads_owned_open")
    op.execute(f"CREATE INDEX ix_leads_owned_open ON leads (org_id) WHERE {OWNED_OPEN}")
