"""deal_stage_stays and deal_funnel_facts: what time in stage and the funnel read, trigger-kept

Time in stage (the cycle metric) is over stays that ended in the period; computing them means
ordering the whole stage history by deal (a window over millions of rows). This table holds each
ended stay (entry id, deal, stage, entered_at, left_at = the next entry's at in (at, id) order),
recomputed per touched deal by statement-level triggers (insert, update, delete: one pass per
statement, so a COPY or an import's rewrite costs one recompute of the deals it touched), and is
read by an index on (org_id, left_at). `loudou_rebuild_stage_stays(org)` recomputes an
organisation (bulk loads that ran with triggers off).

deal_funnel_facts: one narrow row per deal with what the cohort funnel needs (the deal's
pipeline, lead, owner, currency, amount, status, created_at, closed_at; the stages its history
entered; for a lost deal the stage it left for the lost stage), recomputed per touched deal by
triggers on deals (insert; update of those columns) and on deal_stage_history (statement level),
read by (org_id, pipeline_id, created_at) with everything included (an index-only scan).
`loudou_rebuild_funnel_facts(org)` recomputes an organisation.

Revision ID: metricsfast001
Revises: speed0001fuzz
Create Date: 2026-11-30 03:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "metricsfast001"
down_revision: str | None = "speed0001fuzz"
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

FACT_COLUMNS = ["pipeline_id", "lead_id", "owner_id", "currency", "amount", "status", "created_at", "closed_at"]
FUNNEL_SQL = [
    f"""
    CREATE FUNCTION loudou_refresh_funnel_facts(org uuid, ids uuid[]) RETURNS void
    LANGUAGE sql AS $$
      DELETE FROM deal_funnel_facts WHERE org_id = org AND id = ANY(ids);
      INSERT INTO deal_funnel_facts (org_id, id, {", ".join(FACT_COLUMNS)}, reached, last_open)
      SELECT d.org_id, d.id, {", ".join("d." + c for c in FACT_COLUMNS)},
             COALESCE((SELECT array_agg(DISTINCT h.to_stage_id ORDER BY h.to_stage_id)
                       FROM deal_stage_history h WHERE h.org_id = d.org_id AND h.deal_id = d.id), '{{}}'),
             CASE WHEN d.status = 'lost' THEN
               (SELECT h.from_stage_id FROM deal_stage_history h
                WHERE h.org_id = d.org_id AND h.deal_id = d.id AND h.at = d.stage_entered_at
                  AND h.to_stage_id = d.stage_id
                ORDER BY h.id LIMIT 1)
             END
      FROM deals d WHERE d.org_id = org AND d.id = ANY(ids);
    $$
    """,
    """
    CREATE FUNCTION loudou_funnel_facts_from_deal() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM loudou_refresh_funnel_facts(NEW.org_id, ARRAY[NEW.id]);
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deal_funnel_facts_insert AFTER INSERT ON deals
    FOR EACH ROW EXECUTE FUNCTION loudou_funnel_facts_from_deal()
    """,
    f"""
    CREATE TRIGGER deal_funnel_facts_change AFTER UPDATE ON deals
    FOR EACH ROW WHEN (
      (OLD.stage_id, OLD.stage_entered_at, {", ".join("OLD." + c for c in FACT_COLUMNS)})
      IS DISTINCT FROM
      (NEW.stage_id, NEW.stage_entered_at, {", ".join("NEW." + c for c in FACT_COLUMNS)}))
    EXECUTE FUNCTION loudou_funnel_facts_from_deal()
    """,
    """
    CREATE FUNCTION loudou_funnel_facts_from_history() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        PERFORM loudou_refresh_funnel_facts(o, array_agg(DISTINCT deal_id))
        FROM (SELECT org_id AS o, deal_id FROM new_rows) t GROUP BY o;
      ELSIF TG_OP = 'DELETE' THEN
        PERFORM loudou_refresh_funnel_facts(o, array_agg(DISTINCT deal_id))
        FROM (SELECT org_id AS o, deal_id FROM old_rows) t GROUP BY o;
      ELSE
        PERFORM loudou_refresh_funnel_facts(o, array_agg(DISTINCT deal_id))
        FROM (SELECT org_id AS o, deal_id FROM new_rows UNION ALL SELECT org_id, deal_id FROM old_rows) t
        GROUP BY o;
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deal_funnel_facts_history_insert AFTER INSERT ON deal_stage_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION loudou_funnel_facts_from_history()
    """,
    """
    CREATE TRIGGER deal_funnel_facts_history_update AFTER UPDATE ON deal_stage_history
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loudou_funnel_facts_from_history()
    """,
    """
    CREATE TRIGGER deal_funnel_facts_history_delete AFTER DELETE ON deal_stage_history
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION loudou_funnel_facts_from_history()
    """,
    """
    CREATE FUNCTION loudou_rebuild_funnel_facts(org uuid) RETURNS void
    LANGUAGE sql AS $$
      DELETE FROM deal_funnel_facts WHERE org_id = org;
      SELECT loudou_refresh_funnel_facts(org, array_agg(d.id)) FROM deals d WHERE d.org_id = org;
    $$
    """,
    "SELECT loudou_rebuild_funnel_facts(id) FROM organisations",
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
    op.create_table(
        "deal_funnel_facts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reached", postgresql.ARRAY(sa.Uuid()), nullable=False),
        sa.Column("last_open", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id", "id"],
            ["deals.org_id", "deals.id"],
            name="fk_deal_funnel_facts_id_deals",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_deal_funnel_facts_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deal_funnel_facts")),
    )
    op.create_index(
        "ix_deal_funnel_facts_org_id_pipeline_id_created_at",
        "deal_funnel_facts",
        ["org_id", "pipeline_id", "created_at"],
        unique=False,
        postgresql_include=[
            "status",
            "currency",
            "amount",
            "owner_id",
            "lead_id",
            "closed_at",
            "reached",
            "last_open",
        ],
    )
    for statement in FUNNEL_SQL:
        op.execute(statement)


def downgrade() -> None:
    for trigger, table in (
        ("deal_funnel_facts_insert", "deals"),
        ("deal_funnel_facts_change", "deals"),
        ("deal_funnel_facts_history_insert", "deal_stage_history"),
        ("deal_funnel_facts_history_update", "deal_stage_history"),
        ("deal_funnel_facts_history_delete", "deal_stage_history"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS loudou_funnel_facts_from_deal()")
    op.execute("DROP FUNCTION IF EXISTS loudou_funnel_facts_from_history()")
    op.execute("DROP FUNCTION IF EXISTS loudou_rebuild_funnel_facts(uuid)")
    op.execute("DROP FUNCTION IF EXISTS loudou_refresh_funnel_facts(uuid, uuid[])")
    op.drop_index("ix_deal_funnel_facts_org_id_pipeline_id_created_at", table_name="deal_funnel_facts")
    op.drop_table("deal_funnel_facts")
    op.execute("DROP TRIGGER IF EXISTS deal_stage_stays_insert ON deal_stage_history")
    op.execute("DROP TRIGGER IF EXISTS deal_stage_stays_update ON deal_stage_history")
    op.execute("DROP TRIGGER IF EXISTS deal_stage_stays_delete ON deal_stage_history")
    op.execute("DROP FUNCTION IF EXISTS loudou_stage_stays()")
    op.execute("DROP FUNCTION IF EXISTS loudou_rebuild_stage_stays(uuid)")
    op.drop_index("ix_deal_stage_stays_org_id_left_at", table_name="deal_stage_stays")
    op.drop_table("deal_stage_stays")
