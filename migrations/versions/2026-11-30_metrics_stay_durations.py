"""Durations for exact medians without sorting: stay and cycle seconds, indexed; stays per local day

The cycle metric's medians (time in stage: median of the stays that ended in the period; sales
cycle: median and p75 of the deals won in it) sorted every such stay (~1.7M a year at 1M deals).
An exact order statistic needs only the count and a walk to the k-th value in an index ordered by
the value, so:

- deal_stage_stays gets `seconds` (float8, what percentile_cont sorts:
  EXTRACT(EPOCH FROM left_at - entered_at) cast to float8) and `bucket` (a coarse duration class,
  loudou_duration_bucket(seconds), monotonic in seconds), both generated, and an index on
  (org_id, stage_id, bucket, seconds) INCLUDE (left_at): walking a bucket in seconds order is an
  index-only scan.
- deal_stay_days: stays per stage, local day of left_at (organisation timezone) and bucket: count
  and Σ EXTRACT(EPOCH ...) as numeric (so the mean is avg(numeric)'s own division, exactly). The
  counts per bucket tell which bucket holds the k-th stay and how many come before it. Kept by the
  stays trigger, which applies the net change of each statement in one ordered upsert (a live move
  changes one row); rebuilt by loudou_rebuild_stage_stays and by loudou_rebuild_deal_rollups
  (which a timezone change runs).
- deal_funnel_facts gets `cycle_seconds` (float8 of closed_at - created_at, generated) and a partial
  index over won deals on (org_id, cycle_seconds) INCLUDE (closed_at): the won deals' median and p75
  are walks of it; their count and mean come from deal_closed_rollup.

Revision ID: metricsfast004
Revises: metricsfast003
Create Date: 2026-11-30 06:30:00.000000+00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "metricsfast004"
down_revision: str | None = "metricsfast003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Bucket upper bounds in seconds: one minute times 2^(i/4) — about 19% wide each — up to ~13 years.
BOUNDS = [round(60 * 2 ** (i / 4)) for i in range(96)]
TZ = "COALESCE(o.settings->>'timezone', 'UTC')"
EPOCH = "EXTRACT(EPOCH FROM {s}.left_at - {s}.entered_at)"
STAY_SECONDS = "(EXTRACT(EPOCH FROM left_at - entered_at))::double precision"
STAY_BUCKET = f"loudou_duration_bucket({STAY_SECONDS})"
CYCLE_SECONDS = "(EXTRACT(EPOCH FROM closed_at - created_at))::double precision"
UPSERT = """
      ON CONFLICT ON CONSTRAINT uq_deal_stay_days_key DO UPDATE
        SET n = r.n + EXCLUDED.n, seconds = r.seconds + EXCLUDED.seconds"""


def _new_stays(touched: str) -> str:
    """The stays the history gives the deals `touched` selects (org_id, deal_id)."""
    return f"""
        SELECT x.org_id, x.id, x.deal_id, x.to_stage_id AS stage_id, x.at AS entered_at, x.left_at
        FROM (
          SELECT h.org_id, h.id, h.deal_id, h.to_stage_id, h.at,
                 lead(h.at) OVER (PARTITION BY h.org_id, h.deal_id ORDER BY h.at, h.id) AS left_at
          FROM deal_stage_history h JOIN ({touched}) t ON t.org_id = h.org_id AND t.deal_id = h.deal_id
        ) x
        WHERE x.left_at IS NOT NULL"""


def _refresh(touched: str) -> str:
    """SQL recomputing the stays of the deals `touched` selects, and applying the net change of
    their per-day counts first, in one upsert in key order (stays that did not change cancel out)."""
    return f"""
      INSERT INTO deal_stay_days AS r (org_id, id, stage_id, day, bucket, n, seconds)
      SELECT c.org_id, gen_random_uuid(), c.stage_id, (c.left_at AT TIME ZONE {TZ})::date,
             loudou_duration_bucket({EPOCH.format(s="c")}::double precision), sum(c.sign),
             sum(c.sign * {EPOCH.format(s="c")})
      FROM (
        SELECT s.org_id, s.stage_id, s.entered_at, s.left_at, -1 AS sign
        FROM deal_stage_stays s JOIN ({touched}) t ON s.org_id = t.org_id AND s.deal_id = t.deal_id
        UNION ALL
        SELECT n.org_id, n.stage_id, n.entered_at, n.left_at, 1 FROM ({_new_stays(touched)}) n
      ) c JOIN organisations o ON o.id = c.org_id
      GROUP BY c.org_id, c.stage_id, 4, 5
      HAVING sum(c.sign) <> 0 OR sum(c.sign * {EPOCH.format(s="c")}) <> 0
      ORDER BY c.org_id, 4, c.stage_id, 5
      {UPSERT};
      PERFORM set_config('loudou.stays_refresh', 'on', true);
      DELETE FROM deal_stage_stays s USING ({touched}) t WHERE s.org_id = t.org_id AND s.deal_id = t.deal_id;
      PERFORM set_config('loudou.stays_refresh', 'off', true);
      INSERT INTO deal_stage_stays (org_id, id, deal_id, stage_id, entered_at, left_at)
      SELECT n.org_id, n.id, n.deal_id, n.stage_id, n.entered_at, n.left_at FROM ({_new_stays(touched)}) n;"""


# Stays deleted otherwise than by the refresh (a deal's delete cascades to its stays, maybe before
# its history's trigger runs) take their share away themselves.
GONE_SQL = [
    f"""
    CREATE FUNCTION loudou_stay_days_gone() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF current_setting('loudou.stays_refresh', true) IS DISTINCT FROM 'on' THEN
        INSERT INTO deal_stay_days AS r (org_id, id, stage_id, day, bucket, n, seconds)
        SELECT s.org_id, gen_random_uuid(), s.stage_id, (s.left_at AT TIME ZONE {TZ})::date, s.bucket,
               -count(*), -sum({EPOCH.format(s="s")})
        FROM old_rows s JOIN organisations o ON o.id = s.org_id
        GROUP BY s.org_id, s.stage_id, 4, s.bucket
        ORDER BY s.org_id, 4, s.stage_id, s.bucket
        {UPSERT};
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER deal_stay_days_gone AFTER DELETE ON deal_stage_stays
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION loudou_stay_days_gone()
    """,
]

NEW_DEALS = "SELECT DISTINCT org_id, deal_id FROM new_rows"
OLD_DEALS = "SELECT DISTINCT org_id, deal_id FROM old_rows"
BOTH_DEALS = "SELECT org_id, deal_id FROM new_rows UNION SELECT org_id, deal_id FROM old_rows"

REBUILD_STAY_DAYS = f"""
      DELETE FROM deal_stay_days WHERE org_id = org;
      INSERT INTO deal_stay_days (org_id, id, stage_id, day, bucket, n, seconds)
      SELECT s.org_id, gen_random_uuid(), s.stage_id, (s.left_at AT TIME ZONE {TZ})::date, s.bucket,
             count(*), sum({EPOCH.format(s="s")})
      FROM deal_stage_stays s JOIN organisations o ON o.id = s.org_id
      WHERE s.org_id = org
      GROUP BY s.org_id, s.stage_id, 4, s.bucket;"""

# metricsfast003's rebuild of deal_funnel_days (loudou_rebuild_deal_rollups runs it).
REBUILD_DAYS = f"""
      DELETE FROM deal_funnel_days WHERE org_id = org;
      INSERT INTO deal_funnel_days
        (org_id, id, pipeline_id, day, status, currency, reached, last_open, n, amount)
      SELECT f.org_id, gen_random_uuid(), f.pipeline_id, (f.created_at AT TIME ZONE {TZ})::date,
             f.status, f.currency, f.reached, f.last_open, count(*), COALESCE(sum(f.amount), 0)
      FROM deal_funnel_facts f JOIN organisations o ON o.id = f.org_id
      WHERE f.org_id = org
      GROUP BY f.org_id, f.pipeline_id, 4, f.status, f.currency, f.reached, f.last_open;"""


def _rebuild_deal_rollups(with_stays: bool) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION loudou_rebuild_deal_rollups(org uuid) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM deal_open_rollup WHERE org_id = org;
      DELETE FROM deal_closed_rollup WHERE org_id = org;
      PERFORM loudou_deal_rollup_apply(d, 1) FROM deals d WHERE d.org_id = org;
      {REBUILD_DAYS}
      {"PERFORM loudou_rebuild_stay_days(org);" if with_stays else ""}
    END $$
    """


def _stays_trigger(refresh: Callable[[str], str]) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION loudou_stage_stays() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN {refresh(NEW_DEALS)}
      ELSIF TG_OP = 'DELETE' THEN {refresh(OLD_DEALS)}
      ELSE {refresh(BOTH_DEALS)}
      END IF;
      RETURN NULL;
    END $$
    """


def _old_refresh(touched: str) -> str:
    """metricsfast001's body (for the downgrade)."""
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


def _rebuild_stage_stays(with_days: bool) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION loudou_rebuild_stage_stays(org uuid) RETURNS void
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
      {"SELECT loudou_rebuild_stay_days(org);" if with_days else ""}
    $$
    """


UP_SQL = [
    f"""
    CREATE FUNCTION loudou_duration_bucket(seconds double precision) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT width_bucket(seconds, '{{{",".join(map(str, BOUNDS))}}}'::double precision[])::smallint
    $$
    """,
]
DAYS_SQL = [
    f"""
    CREATE FUNCTION loudou_rebuild_stay_days(org uuid) RETURNS void
    LANGUAGE sql AS $$ {REBUILD_STAY_DAYS} $$
    """,
    _stays_trigger(_refresh),
    *GONE_SQL,
    _rebuild_stage_stays(with_days=True),
    _rebuild_deal_rollups(with_stays=True),
    "SELECT loudou_rebuild_stay_days(id) FROM organisations",
]
DOWN_SQL = [
    "DROP TRIGGER IF EXISTS deal_stay_days_gone ON deal_stage_stays",
    "DROP FUNCTION IF EXISTS loudou_stay_days_gone()",
    _stays_trigger(_old_refresh),
    _rebuild_stage_stays(with_days=False),
    _rebuild_deal_rollups(with_stays=False),
    "DROP FUNCTION IF EXISTS loudou_rebuild_stay_days(uuid)",
]


def upgrade() -> None:
    for statement in UP_SQL:
        op.execute(statement)
    op.add_column(
        "deal_stage_stays",
        sa.Column("seconds", sa.Double(), sa.Computed(STAY_SECONDS, persisted=True), nullable=False),
    )
    op.add_column(
        "deal_stage_stays",
        sa.Column("bucket", sa.SmallInteger(), sa.Computed(STAY_BUCKET, persisted=True), nullable=False),
    )
    op.create_index(
        "ix_deal_stage_stays_org_id_stage_id_bucket_seconds",
        "deal_stage_stays",
        ["org_id", "stage_id", "bucket", "seconds"],
        unique=False,
        postgresql_include=["left_at"],
    )
    op.add_column(
        "deal_funnel_facts",
        sa.Column("cycle_seconds", sa.Double(), sa.Computed(CYCLE_SECONDS, persisted=True), nullable=True),
    )
    op.create_index(
        "ix_deal_funnel_facts_org_id_cycle_seconds_won",
        "deal_funnel_facts",
        ["org_id", "cycle_seconds"],
        unique=False,
        postgresql_include=["closed_at"],
        postgresql_where=sa.text("status = 'won'"),
    )
    op.create_table(
        "deal_stay_days",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("stage_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Numeric(), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_deal_stay_days_org_id_organisations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_deal_stay_days")),
        sa.UniqueConstraint("org_id", "day", "stage_id", "bucket", name="uq_deal_stay_days_key"),
    )
    for statement in DAYS_SQL:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWN_SQL:
        op.execute(statement)
    op.drop_table("deal_stay_days")
    op.drop_index("ix_deal_funnel_facts_org_id_cycle_seconds_won", table_name="deal_funnel_facts")
    op.drop_column("deal_funnel_facts", "cycle_seconds")
    op.drop_index("ix_deal_stage_stays_org_id_stage_id_bucket_seconds", table_name="deal_stage_stays")
    op.drop_column("deal_stage_stays", "bucket")
    op.drop_column("deal_stage_stays", "seconds")
    op.execute("DROP FUNCTION IF EXISTS loudou_duration_bucket(double precision)")
