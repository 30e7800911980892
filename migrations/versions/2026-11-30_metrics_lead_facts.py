"""lead_funnel_facts: what the lead funnel reads, one narrow trigger-kept row per lead

The lead funnel counted a cohort of leads (wide rows) joined to the deals they converted to (is it
won?). This table holds per lead the columns the funnel filters, groups and counts by and `won`
(the converted deal's status is won now), recomputed by triggers: on leads (insert; update of
those columns), on deals (insert, delete, status change: the leads converted to it). Read by
(org_id, created_at) with everything included. `loudou_rebuild_lead_facts(org)` recomputes an
organisation (bulk loads that ran with triggers off).

Revision ID: metricsfast002
Revises: metricsfast001
Create Date: 2026-11-30 03:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "metricsfast002"
down_revision: str | None = "metricsfast001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = [
    "created_at",
    "owner_id",
    "source",
    "source_id",
    "status",
    "first_contacted_at",
    "converted_deal_id",
    "duplicate_of",
    "deleted_at",
]
INSERT = f"""
      INSERT INTO lead_funnel_facts (org_id, id, {", ".join(COLUMNS)}, won)
      SELECT le.org_id, le.id, {", ".join("le." + c for c in COLUMNS)}, COALESCE(cd.status = 'won', false)
      FROM leads le LEFT JOIN deals cd ON cd.org_id = le.org_id AND cd.id = le.converted_deal_id"""

FACTS_SQL = [
    f"""
    CREATE FUNCTION loudou_lead_facts_from_lead() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM lead_funnel_facts WHERE org_id = NEW.org_id AND id = NEW.id;
      {INSERT}
      WHERE le.org_id = NEW.org_id AND le.id = NEW.id;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER lead_funnel_facts_insert AFTER INSERT ON leads
    FOR EACH ROW EXECUTE FUNCTION loudou_lead_facts_from_lead()
    """,
    f"""
    CREATE TRIGGER lead_funnel_facts_change AFTER UPDATE ON leads
    FOR EACH ROW WHEN (
      ({", ".join("OLD." + c for c in COLUMNS)}) IS DISTINCT FROM ({", ".join("NEW." + c for c in COLUMNS)}))
    EXECUTE FUNCTION loudou_lead_facts_from_lead()
    """,
    """
    CREATE FUNCTION loudou_lead_facts_from_deal() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        UPDATE lead_funnel_facts SET won = false
        WHERE org_id = OLD.org_id AND converted_deal_id = OLD.id AND won;
      ELSE
        UPDATE lead_funnel_facts SET won = (NEW.status = 'won')
        WHERE org_id = NEW.org_id AND converted_deal_id = NEW.id AND won IS DISTINCT FROM (NEW.status = 'won');
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER lead_funnel_facts_deal_write AFTER INSERT OR DELETE ON deals
    FOR EACH ROW EXECUTE FUNCTION loudou_lead_facts_from_deal()
    """,
    """
    CREATE TRIGGER lead_funnel_facts_deal_status AFTER UPDATE ON deals
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION loudou_lead_facts_from_deal()
    """,
    f"""
    CREATE FUNCTION loudou_rebuild_lead_facts(org uuid) RETURNS void
    LANGUAGE sql AS $$
      DELETE FROM lead_funnel_facts WHERE org_id = org;
      {INSERT}
      WHERE le.org_id = org;
    $$
    """,
    "SELECT loudou_rebuild_lead_facts(id) FROM organisations",
]


def upgrade() -> None:
    op.create_table(
        "lead_funnel_facts",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_contacted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("converted_deal_id", sa.Uuid(), nullable=True),
        sa.Column("duplicate_of", sa.Uuid(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("won", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "id"],
            ["leads.org_id", "leads.id"],
            name="fk_lead_funnel_facts_id_leads",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_lead_funnel_facts_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_lead_funnel_facts")),
    )
    op.create_index(
        "ix_lead_funnel_facts_org_id_created_at",
        "lead_funnel_facts",
        ["org_id", "created_at"],
        unique=False,
        postgresql_include=[c for c in COLUMNS if c != "created_at"] + ["won"],
    )
    op.create_index(
        "ix_lead_funnel_facts_org_id_converted_deal_id",
        "lead_funnel_facts",
        ["org_id", "converted_deal_id"],
        unique=False,
    )
    for statement in FACTS_SQL:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS lead_funnel_facts_insert ON leads")
    op.execute("DROP TRIGGER IF EXISTS lead_funnel_facts_change ON leads")
    op.execute("DROP TRIGGER IF EXISTS lead_funnel_facts_deal_write ON deals")
    op.execute("DROP TRIGGER IF EXISTS lead_funnel_facts_deal_status ON deals")
    op.execute("DROP FUNCTION IF EXISTS loudou_lead_facts_from_lead()")
    op.execute("DROP FUNCTION IF EXISTS loudou_lead_facts_from_deal()")
    op.execute("DROP FUNCTION IF EXISTS loudou_rebuild_lead_facts(uuid)")
    op.drop_index("ix_lead_funnel_facts_org_id_converted_deal_id", table_name="lead_funnel_facts")
    op.drop_index("ix_lead_funnel_facts_org_id_created_at", table_name="lead_funnel_facts")
    op.drop_table("lead_funnel_facts")
