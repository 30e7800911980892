"""deal_funnel_days: the funnel facts summed per local creation day, trigger-kept

An unfiltered funnel over a year scanned ~400k fact rows to produce ~100 groups. This table sums
deal_funnel_facts per pipeline, local creation day (organisation timezone), status, currency,
stages reached and last open stage (count, Σ amount), kept by a row trigger on deal_funnel_facts
(its refresh deletes and inserts rows, each adding or taking away its share);
loudou_rebuild_deal_rollups(org), which a timezone change runs, rebuilds it too.

Revision ID: metricsfast003
Revises: metricsfast002
Create Date: 2026-11-30 04:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "metricsfast003"
down_revision: str | None = "metricsfast002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAY = "(f.created_at AT TIME ZONE COALESCE(o.settings->>'timezone', 'UTC'))::date"
REBUILD_DAYS = f"""
      DELETE FROM deal_funnel_days WHERE org_id = org;
      INSERT INTO deal_funnel_days (org_id, id, pipeline_id, day, status, currency, reached, last_open, n, amount)
      SELECT f.org_id, gen_random_uuid(), f.pipeline_id, {DAY}, f.status, f.currency, f.reached, f.last_open,
             count(*), COALESCE(sum(f.amount), 0)
      FROM deal_funnel_facts f JOIN organisations o ON o.id = f.org_id
      WHERE f.org_id = org
      GROUP BY f.org_id, f.pipeline_id, {DAY}, f.status, f.currency, f.reached, f.last_open;"""

UP_SQL = [
    """
    CREATE FUNCTION loudou_funnel_days() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      f deal_funnel_facts;
      sign integer;
      tz text;
    BEGIN
      IF TG_OP = 'INSERT' THEN f := NEW; sign := 1; ELSE f := OLD; sign := -1; END IF;
      SELECT COALESCE(o.settings->>'timezone', 'UTC') INTO tz FROM organisations o WHERE o.id = f.org_id;
      INSERT INTO deal_funnel_days AS r
        (org_id, id, pipeline_id, day, status, currency, reached, last_open, n, amount)
      VALUES (f.org_id, gen_random_uuid(), f.pipeline_id, (f.created_at AT TIME ZONE tz)::date, f.status,
              f.currency, f.reached, f.last_open, sign, sign * COALESCE(f.amount, 0))
      ON CONFLICT ON CONSTRAINT uq_deal_funnel_days_key DO UPDATE
        SET n = r.n + EXCLUDED.n, amount = r.amount + EXCLUDED.amount;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deal_funnel_days_write AFTER INSERT OR DELETE ON deal_funnel_facts
    FOR EACH ROW EXECUTE FUNCTION loudou_funnel_days()
    """,
    f"""
    CREATE OR REPLACE FUNCTION loudou_rebuild_deal_rollups(org uuid) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM deal_open_rollup WHERE org_id = org;
      DELETE FROM deal_closed_rollup WHERE org_id = org;
      PERFORM loudou_deal_rollup_apply(d, 1) FROM deals d WHERE d.org_id = org;
      {REBUILD_DAYS}
    END $$
    """,
    f"""
    CREATE FUNCTION loudou_rebuild_funnel_days(org uuid) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
      {REBUILD_DAYS}
    END $$
    """,
    "SELECT loudou_rebuild_funnel_days(id) FROM organisations",
]

DOWN_SQL = [
    "DROP TRIGGER IF EXISTS deal_funnel_days_write ON deal_funnel_facts",
    "DROP FUNCTION IF EXISTS loudou_funnel_days()",
    "DROP FUNCTION IF EXISTS loudou_rebuild_funnel_days(uuid)",
    """
    CREATE OR REPLACE FUNCTION loudou_rebuild_deal_rollups(org uuid) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM deal_open_rollup WHERE org_id = org;
      DELETE FROM deal_closed_rollup WHERE org_id = org;
      PERFORM loudou_deal_rollup_apply(d, 1) FROM deals d WHERE d.org_id = org;
    END $$
    """,
]


def upgrade() -> None:
    op.create_table(
        "deal_funnel_days",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reached", postgresql.ARRAY(sa.Uuid()), nullable=False),
        sa.Column("last_open", sa.Uuid(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            name="fk_deal_funnel_days_pipeline_id_pipelines",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_deal_funnel_days_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deal_funnel_days")),
        sa.UniqueConstraint(
            "org_id",
            "pipeline_id",
            "day",
            "status",
            "currency",
            "reached",
            "last_open",
            name="uq_deal_funnel_days_key",
            postgresql_nulls_not_distinct=True,
        ),
    )
    for statement in UP_SQL:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWN_SQL:
        op.execute(statement)
    op.drop_table("deal_funnel_days")
