"""metrics: targets, dated exchange rates, pipeline snapshots, import keys, forecast category

New tables are born with tenant keys: primary key (org_id, id), composite foreign keys
(org_id, x_id) -> (org_id, id). Two rollups of deals are kept by triggers on deals.

Revision ID: c9metrics0001
Revises: c11coll0001
Create Date: 2026-11-30 00:15:43.315023+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "c9metrics0001"
down_revision: str | None = "c11coll0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Rollups kept by triggers on deals: each insert, change and delete takes the deal's old share away
# and adds its new one, so the rollups always equal the same sums over the deals table.
ROLLUP_SQL = [
    """
    CREATE FUNCTION loudou_deal_rollup_apply(d deals, sign integer) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
      src text;
      tz text;
    BEGIN
      IF d.lead_id IS NOT NULL THEN
        SELECT l.source INTO src FROM leads l WHERE l.org_id = d.org_id AND l.id = d.lead_id;
      END IF;
      IF d.status = 'open' THEN
        INSERT INTO deal_open_rollup AS r
          (org_id, id, pipeline_id, stage_id, currency, owner_id, source, close_month, n, amount, weighted)
        VALUES (d.org_id, gen_random_uuid(), d.pipeline_id, d.stage_id, d.currency, d.owner_id, src,
                to_char(d.expected_close_date, 'YYYY-MM'), sign, sign * COALESCE(d.amount, 0),
                sign * COALESCE(d.amount * d.probability / 100, 0))
        ON CONFLICT ON CONSTRAINT uq_deal_open_rollup_key DO UPDATE
          SET n = r.n + EXCLUDED.n, amount = r.amount + EXCLUDED.amount, weighted = r.weighted + EXCLUDED.weighted;
      ELSIF d.closed_at IS NOT NULL THEN
        SELECT COALESCE(o.settings->>'timezone', 'UTC') INTO tz FROM organisations o WHERE o.id = d.org_id;
        INSERT INTO deal_closed_rollup AS r
          (org_id, id, day, status, pipeline_id, currency, owner_id, source, n, amount, amount_n, cycle_seconds)
        VALUES (d.org_id, gen_random_uuid(), (d.closed_at AT TIME ZONE tz)::date, d.status, d.pipeline_id,
                d.currency, d.owner_id, src, sign, sign * COALESCE(d.amount, 0),
                sign * (d.amount IS NOT NULL)::integer, sign * EXTRACT(EPOCH FROM d.closed_at - d.created_at))
        ON CONFLICT ON CONSTRAINT uq_deal_closed_rollup_key DO UPDATE
          SET n = r.n + EXCLUDED.n, amount = r.amount + EXCLUDED.amount, amount_n = r.amount_n + EXCLUDED.amount_n,
              cycle_seconds = r.cycle_seconds + EXCLUDED.cycle_seconds;
      END IF;
    END $$
    """,
    """
    CREATE FUNCTION loudou_deal_rollups() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP <> 'INSERT' THEN PERFORM loudou_deal_rollup_apply(OLD, -1); END IF;
      IF TG_OP <> 'DELETE' THEN PERFORM loudou_deal_rollup_apply(NEW, 1); END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deal_rollups_write AFTER INSERT OR DELETE ON deals
    FOR EACH ROW EXECUTE FUNCTION loudou_deal_rollups()
    """,
    """
    CREATE TRIGGER deal_rollups_change AFTER UPDATE ON deals
    FOR EACH ROW WHEN (
      (OLD.status, OLD.pipeline_id, OLD.stage_id, OLD.currency, OLD.owner_id, OLD.lead_id, OLD.amount,
       OLD.probability, OLD.expected_close_date, OLD.closed_at, OLD.created_at)
      IS DISTINCT FROM
      (NEW.status, NEW.pipeline_id, NEW.stage_id, NEW.currency, NEW.owner_id, NEW.lead_id, NEW.amount,
       NEW.probability, NEW.expected_close_date, NEW.closed_at, NEW.created_at))
    EXECUTE FUNCTION loudou_deal_rollups()
    """,
    """
    CREATE FUNCTION loudou_rebuild_deal_rollups(org uuid) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM deal_open_rollup WHERE org_id = org;
      DELETE FROM deal_closed_rollup WHERE org_id = org;
      PERFORM loudou_deal_rollup_apply(d, 1) FROM deals d WHERE d.org_id = org;
    END $$
    """,
    "SELECT loudou_rebuild_deal_rollups(id) FROM organisations",
]


def upgrade() -> None:
    op.create_table(
        "exchange_rates",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("from_currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("to_currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("rate", sa.Numeric(precision=24, scale=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rate > 0", name=op.f("ck_exchange_rates_positive_rate")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_exchange_rates_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_exchange_rates")),
        sa.UniqueConstraint(
            "org_id",
            "from_currency",
            "to_currency",
            "date",
            name=op.f("uq_exchange_rates_org_id_from_currency_to_currency_date"),
        ),
    )
    op.create_table(
        "pipeline_snapshot_days",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_pipeline_snapshot_days_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_pipeline_snapshot_days")),
        sa.UniqueConstraint("org_id", "day", name=op.f("uq_pipeline_snapshot_days_org_id_day")),
    )
    op.create_table(
        "pipeline_snapshots",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("stage_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=24, scale=4), nullable=False),
        sa.Column("weighted_amount", sa.Numeric(precision=30, scale=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            name="fk_pipeline_snapshots_pipeline",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "stage_id"],
            ["stages.org_id", "stages.id"],
            name="fk_pipeline_snapshots_stage",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_pipeline_snapshots_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_pipeline_snapshots")),
    )
    op.create_index("ix_pipeline_snapshots_org_id_day", "pipeline_snapshots", ["org_id", "day"], unique=False)
    op.create_table(
        "sales_targets",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("user_id IS NULL OR team_id IS NULL", name=op.f("ck_sales_targets_one_scope")),
        sa.ForeignKeyConstraint(
            ["org_id", "team_id"],
            ["teams.org_id", "teams.id"],
            name="fk_sales_targets_team",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "user_id"],
            ["users.org_id", "users.id"],
            name="fk_sales_targets_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_sales_targets_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_sales_targets")),
    )
    op.create_index(
        "ix_sales_targets_org_id_period_start", "sales_targets", ["org_id", "period_start"], unique=False
    )
    op.create_table(
        "import_records",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("deal_id", sa.Uuid(), nullable=True),
        sa.Column("lead_id", sa.Uuid(), nullable=True),
        sa.Column("checksum", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "deal_id"],
            ["deals.org_id", "deals.id"],
            name="fk_import_records_deal",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id", "lead_id"],
            ["leads.org_id", "leads.id"],
            name="fk_import_records_lead",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_import_records_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_import_records")),
        sa.UniqueConstraint(
            "org_id", "kind", "external_id", name=op.f("uq_import_records_org_id_kind_external_id")
        ),
    )
    op.create_index("ix_deals_org_id_closed_at", "deals", ["org_id", "closed_at"], unique=False)
    op.create_index("ix_deals_org_id_created_at", "deals", ["org_id", "created_at"], unique=False)
    op.add_column(
        "stages",
        sa.Column("forecast_category", sa.String(length=16), server_default="pipeline", nullable=False),
    )
    op.create_table(
        "deal_closed_rollup",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("amount_n", sa.Integer(), nullable=False),
        sa.Column("cycle_seconds", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            name="fk_deal_closed_rollup_pipeline",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_deal_closed_rollup_org_id_organisations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deal_closed_rollup")),
        sa.UniqueConstraint(
            "org_id", "day", "status", "pipeline_id", "currency", "owner_id", "source",
            name="uq_deal_closed_rollup_key",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index("ix_deal_closed_rollup_org_id_day", "deal_closed_rollup", ["org_id", "day"], unique=False)
    op.create_table(
        "deal_open_rollup",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("stage_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("close_month", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(), nullable=False),
        sa.Column("weighted", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id", "pipeline_id"],
            ["pipelines.org_id", "pipelines.id"],
            name="fk_deal_open_rollup_pipeline",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_deal_open_rollup_org_id_organisations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deal_open_rollup")),
        sa.UniqueConstraint(
            "org_id", "pipeline_id", "stage_id", "currency", "owner_id", "source", "close_month",
            name="uq_deal_open_rollup_key",
            postgresql_nulls_not_distinct=True,
        ),
    )
    for statement in ROLLUP_SQL:
        op.execute(statement)
    # The seeded default pipeline's late stages: quote is best case, negotiation is commit.
    op.execute("UPDATE stages SET forecast_category = 'best_case' WHERE key = 'quote' AND kind = 'open'")
    op.execute("UPDATE stages SET forecast_category = 'commit' WHERE key = 'negotiation' AND kind = 'open'")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS deal_rollups_write ON deals")
    op.execute("DROP TRIGGER IF EXISTS deal_rollups_change ON deals")
    op.execute("DROP FUNCTION IF EXISTS loudou_deal_rollups()")
    op.execute("DROP FUNCTION IF EXISTS loudou_deal_rollup_apply(deals, integer)")
    op.execute("DROP FUNCTION IF EXISTS loudou_rebuild_deal_rollups(uuid)")
    op.drop_table("deal_open_rollup")
    op.drop_index("ix_deal_closed_rollup_org_id_day", table_name="deal_closed_rollup")
    op.drop_table("deal_closed_rollup")
    op.drop_column("stages", "forecast_category")
    op.drop_index("ix_deals_org_id_created_at", table_name="deals")
    op.drop_index("ix_deals_org_id_closed_at", table_name="deals")
    op.drop_table("import_records")
    op.drop_index("ix_sales_targets_org_id_period_start", table_name="sales_targets")
    op.drop_table("sales_targets")
    op.drop_index("ix_pipeline_snapshots_org_id_day", table_name="pipeline_snapshots")
    op.drop_table("pipeline_snapshots")
    op.drop_table("pipeline_snapshot_days")
    op.drop_table("exchange_rates")

