"""drop unused indexes on lead status and outbox event type

Nothing looks leads up by status alone (lists filter it within an organisation, among a few
distinct values) or outbox events by type; each index cost every new lead an index insert.

Revision ID: a5b1dropidx01
Revises: a4a3dealfu001
Create Date: 2026-11-22 17:11:39.360978+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a5b1dropidx01"
down_revision: str | None = "a4a3dealfu001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_leads_status"), table_name="leads")
    op.drop_index(op.f("ix_outbox_event_type"), table_name="outbox")


def downgrade() -> None:
    op.create_index(op.f("ix_outbox_event_type"), "outbox", ["event_type"], unique=False)
    op.create_index(op.f("ix_leads_status"), "leads", ["status"], unique=False)
