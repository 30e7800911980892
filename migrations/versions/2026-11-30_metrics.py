"""metrics: targets, dated exchange rates, pipeline snapshots, import keys, forecast category

New tables are born with tenant keys: primary key (org_id, id), composite foreign keys. Until the
existing tables get (org_id, id) primary keys, their `uq_<table>_org_id_id` unique constraints are
what the composite keys point at; they are created only when missing, so the tenant-keys migration
may create (or replace) them first.

Revision ID: c98311194075
Revises: a5b1dropidx01
Create Date: 2026-11-30 00:15:43.315023+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "c9metrics0001"
down_revision: str | None = "a5b1dropidx01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


ORG_ID_ID_TABLES = ("users", "teams", "pipelines", "stages", "deals", "leads")


def _unique_org_id_id(table: str) -> None:
    """UNIQUE (org_id, id) named uq_<table>_org_id_id, unless it is there already."""
    name = f"uq_{table}_org_id_id"
    op.execute(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{name}') THEN
            ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE (org_id, id);
          END IF;
        END $$;
        """
    )


def upgrade() -> None:
    for table in ORG_ID_ID_TABLES:
        _unique_org_id_id(table)
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
    # The seeded default pipeline's late stages: quote is best case, negotiation is commit.
    op.execute("UPDATE stages SET forecast_category = 'best_case' WHERE key = 'quote' AND kind = 'open'")
    op.execute("UPDATE stages SET forecast_category = 'commit' WHERE key = 'negotiation' AND kind = 'open'")


def downgrade() -> None:
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
    for table in ORG_ID_ID_TABLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS uq_{table}_org_id_id")
