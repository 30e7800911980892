"""deal_stage_stays: ended stays in a stage, kept by statement triggers on deal_stage_history

Time in stage (the cycle metric) is over stays that ended in the period; computing them means
ordering the whole stage history by deal (a window over millions of rows). This table holds each
ended stay (entry id, deal, stage, entered_at, left_at = the next entry's at in (at, id) order),
recomputed per touched deal by statement-level triggers (insert, update, delete: one pass per
statement, so a COPY or an import's rewrite costs one recompute of the deals it touched), and is
read by an index on (org_id, left_at). `loudou_rebuild_stage_stays(org)` recomputes an
organisation (bulk loads that ran with triggers off).

Revision ID: metricsfast001
Revises: b1e7export001
Create Date: 2026-11-30 03:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "metricsfast001"
down_revision: str | None = "b1e7export001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _refresh(touched: str) -> str:
    """SQL recomputing the stays of the deals `touched` selects (org_id, deal_id), as lead(at) over
    each deal's history."""
    return f"""
      DELETE FROM deal_stage_stays s USING ({touched}) t WHERE s.org_id = t.org_id AND s.deal_id = t.deal_id;
      INSERT INTO deal_stage_stays (org_id, id, deal_id, stage_id, entered_at, left_at)
      SELECT x.org_id, x.id, x.deal_id, x.to_stage_id, x.at, x.left_at
      FROM (
        SELECT h.org_id, h.id, h.deal_id, h.to_stage_id, h.at,
               lead(h.at) OVER (PARTITION BY h.org_id, h.deal_id ORDER BY h.at, h.id) AS left_at
        FROM deal_stage_history h JOIN ({touched}) t ON t.org_id = h.org_id AND t.deal_id = h.deal_id
      ) x
      WHERE x.left_at IS NOT NULL;"""


NEW_DEALS = "SELECT DISTINCT org_id, deal_id FROM new_rows"
OLD_DEALS = "SELECT DISTINCT org_id, deal_id FROM old_rows"
BOTH_DEALS = "SELECT org_id, deal_id FROM new_rows UNION SELECT org_id, deal_id FROM old_rows"

STAYS_SQL = [
    f"""
    CREATE FUNCTION loudou_stage_stays() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN {_refresh(NEW_DEALS)}
      ELSIF TG_OP = 'DELETE' THEN {_refresh(OLD_DEALS)}
      ELSE {_refresh(BOTH_DEALS)}
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deal_stage_stays_insert AFTER INSERT ON deal_stage_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION loudou_stage_stays()
    """,
    """
    CREATE TRIGGER deal_stage_stays_update AFTER UPDATE ON deal_stage_history
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loudou_stage_stays()
    """,
    """
    CREATE TRIGGER deal_stage_stays_delete AFTER DELETE ON deal_stage_history
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION loudou_stage_stays()
    """,
    """
    CREATE FUNCTION loudou_rebuild_stage_stays(org uuid) RETURNS void
    LANGUAGE sql AS $$
      DELETE FROM deal_stage_stays WHERE org_id = org;
      INSERT INTO deal_stage_stays (org_id, id, deal_id, stage_id, entered_at, left_at)
      SELECT x.org_id, x.id, x.deal_id, x.to_stage_id, x.at, x.left_at
      FROM (
        SELECT h.org_id, h.id, h.deal_id, h.to_stage_id, h.at,
               lead(h.at) OVER (PARTITION BY h.deal_id ORDER BY h.at, h.id) AS left_at
        FROM deal_stage_history h WHERE h.org_id = org
      ) x
      WHERE x.left_at IS NOT NULL;
    $$
    """,
    "SELECT loudou_rebuild_stage_stays(id) FROM organisations",
]


def upgrade() -> None:
    op.create_table(
        "deal_stage_stays",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deal_id", sa.Uuid(), nullable=False),
        sa.Column("stage_id", sa.Uuid(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "deal_id"],
            ["deals.org_id", "deals.id"],
            name="fk_deal_stage_stays_deal_id_deals",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_deal_stage_stays_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deal_stage_stays")),
    )
    op.create_index(
        "ix_deal_stage_stays_org_id_left_at",
        "deal_stage_stays",
        ["org_id", "left_at"],
        unique=False,
        postgresql_include=["stage_id", "entered_at", "deal_id"],
    )
    for statement in STAYS_SQL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS deal_stage_stays_insert ON deal_stage_history")
    op.execute("DROP TRIGGER IF EXISTS deal_stage_stays_update ON deal_stage_history")
    op.execute("DROP TRIGGER IF EXISTS deal_stage_stays_delete ON deal_stage_history")
    op.execute("DROP FUNCTION IF EXISTS loudou_stage_stays()")
    op.execute("DROP FUNCTION IF EXISTS loudou_rebuild_stage_stays(uuid)")
    op.drop_index("ix_deal_stage_stays_org_id_left_at", table_name="deal_stage_stays")
    op.drop_table("deal_stage_stays")
