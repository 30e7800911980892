"""leads.phone is 64 characters, as the bodies that write it accept

The lead's fields have one definition (app.models.lead.LeadFields) for the table and the request
bodies; the column was 32 while the bodies took 64. Stored phones are E.164 (at most 16
characters), so widening changes no row; PostgreSQL does it without a rewrite.

Revision ID: b1leadphone64
Revises: a5b1dropidx01
Create Date: 2026-11-30 00:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b1leadphone64"
down_revision: str | None = "a5b1dropidx01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("leads", "phone", type_=sa.String(length=64), existing_nullable=True)


def downgrade() -> None:
    op.alter_column("leads", "phone", type_=sa.String(length=32), existing_nullable=True)
