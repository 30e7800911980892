"""Merge the domain branches (deals, webhooks, leads/assignment/follow-ups) into one head.

Revision ID: m1merge0001
Revises: d5a1deals0001, f4a1webhooks01, a4a2followup01
Create Date: 2026-11-22
"""

from collections.abc import Sequence

revision: str = "m1merge0001"
down_revision: str | Sequence[str] | None = ("d5a1deals0001", "f4a1webhooks01", "a4a2followup01")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to do: the branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo."""
