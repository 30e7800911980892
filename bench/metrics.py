"""Metrics on a big organisation: every endpoint over HTTP next to hand-written SQL on the base tables.

    .venv/bin/python -m bench.metrics [--deals 1000000] [--leads 200000] [--runs 5]

Creates a fresh database (dropped at the end unless `--keep`), runs the migrations, creates an
organisation with 20 reps in 4 teams, and loads by COPY (not the ORM) `--deals` deals created over
the last `--years` years (growing: more recent deals than old ones) with about five stage-history
rows each (random walks through the default pipeline with steps back, won, lost, reopened, still
open), the field history live changes would have written, and `--leads` leads, a third of them
converted. It loads the way a restore does: secondary indexes dropped and built after the COPY,
triggers and foreign-key checks off while it runs, then the trigger-kept tables (rollups, stays,
funnel facts, lead facts) rebuilt in one pass each. It takes the daily snapshots of the last 30
days (the cron's job), then serves the API (`loudou serve --workers 2`) and times each metrics
endpoint with its default filters (the year up to today; the trend over the last 30 days) — the
median of `--runs` calls — next to the best SQL we could write by hand on the base tables for the
same numbers, run over asyncpg in the same run with the same work_mem as the API's metrics
transactions, and prints one table with the ratio (endpoint / SQL) and the API processes' peak
RSS. `--keep` keeps the loaded database; `--database NAME` times again on it (migrating it first).
PostgreSQL and Redis: as
bench/intake.py finds them (bench/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.config import Settings
from bench.intake import BIN, free_port, run, server
from bench.servers import bench_servers, database_dsn

OPEN = ["prospect", "first_contact", "needs_confirmed", "quote", "negotiation"]
PROBABILITY = {"prospect": 10, "first_contact": 20, "needs_confirmed": 40, "quote": 60, "negotiation": 80}
CHUNK = 50_000


def _json(value: Any) -> str:
    return json.dumps(value)


LOADED = ["deals", "deal_stage_history", "deal_field_history", "leads"]


async def load(conn: asyncpg.Connection, org_id: uuid.UUID, args: argparse.Namespace) -> None:
    """Bulk-load the way a restore does: secondary indexes dropped and rebuilt after the COPY,
    triggers and foreign-key checks off while it runs (the generator keeps every key in the
    organisation), then the rollups the triggers would have kept, rebuilt in one pass."""
    indexes = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' "
        "AND i.tablename = ANY($1::text[]) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        LOADED,
    )
    for row in indexes:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')
    await conn.execute("SET session_replication_role = replica")
    started = time.perf_counter()
    await _generate(conn, org_id, args)
    print(f"  COPY: {time.perf_counter() - started:.0f} s")
    await conn.execute("SET session_replication_role = DEFAULT")
    started = time.perf_counter()
    await conn.execute("SET maintenance_work_mem = '256MB'")
    for row in indexes:
        await conn.execute(row["indexdef"])
    print(f"  {len(indexes)} indexes: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    await conn.execute("SET session_replication_role = replica")  # one pass each, no cascading triggers
    await conn.execute("SELECT loudou_rebuild_deal_rollups($1)", org_id)
    await conn.execute("SELECT loudou_rebuild_stage_stays($1)", org_id)
    await conn.execute("SELECT loudou_rebuild_funnel_facts($1)", org_id)
    await conn.execute("SELECT loudou_rebuild_funnel_days($1)", org_id)
    await conn.execute("SELECT loudou_rebuild_lead_facts($1)", org_id)
    await conn.execute("SET session_replication_role = DEFAULT")
    await _vacuum_precomputed(conn)
    for table in LOADED:
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    print(f"  rollups, vacuum, analyze: {time.perf_counter() - started:.0f} s")


PRECOMPUTED = [
    "deal_stage_stays",
    "deal_funnel_facts",
    "deal_funnel_days",
    "deal_duration_days",
    "deal_duration_months",
    "lead_funnel_facts",
    "deal_open_rollup",
    "deal_closed_rollup",
    "pipeline_snapshots",
]


async def _vacuum_precomputed(conn: asyncpg.Connection) -> None:
    """Visibility maps and statistics of the trigger-kept tables (index-only scans need the former)."""
    for table in PRECOMPUTED:
        await conn.execute(f"VACUUM (ANALYZE) {table}")


async def _generate(conn: asyncpg.Connection, org_id: uuid.UUID, args: argparse.Namespace) -> None:
    """Users, deals with stage and field history, leads — by COPY."""
    rng = random.Random(7)
    pipeline_id, stage_rows = (
        await conn.fetchval("SELECT id FROM pipelines WHERE org_id = $1 AND is_default", org_id),
        await conn.fetch("SELECT id, key, probability FROM stages WHERE org_id = $1", org_id),
    )
    stage = {r["key"]: r["id"] for r in stage_rows}
    now = datetime.now(UTC)
    teams = [uuid.uuid4() for _ in range(4)]
    await conn.copy_records_to_table(
        "teams",
        records=[(t, org_id, f"Team {i}", now, now, 1) for i, t in enumerate(teams)],
        columns=["id", "org_id", "name", "created_at", "updated_at", "version"],
    )
    users = [uuid.uuid4() for _ in range(20)]
    await conn.copy_records_to_table(
        "users",
        records=[
            (u, org_id, f"rep{i}@bench.example", f"Rep {i}", "rep", teams[i % 4], True, 1, "UTC", now, now, 1)
            for i, u in enumerate(users)
        ],
        columns=[
            "id",
            "org_id",
            "email",
            "name",
            "role",
            "team_id",
            "active",
            "weight",
            "timezone",
            "created_at",
            "updated_at",
            "version",
        ],
    )
    deal_ids: list[tuple[uuid.UUID, datetime, str]] = []
    deals: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    fields: list[tuple[Any, ...]] = []
    counts = {"deals": 0, "history": 0, "fields": 0}

    async def flush() -> None:
        await conn.copy_records_to_table(
            "deals",
            records=deals,
            columns=[
                "id",
                "org_id",
                "pipeline_id",
                "stage_id",
                "name",
                "owner_id",
                "amount",
                "currency",
                "probability",
                "probability_overridden",
                "expected_close_date",
                "status",
                "lost_reason",
                "stage_entered_at",
                "last_activity_at",
                "closed_at",
                "attributes",
                "created_at",
                "updated_at",
                "version",
            ],
        )
        await conn.copy_records_to_table(
            "deal_stage_history",
            records=history,
            columns=["id", "org_id", "deal_id", "pipeline_id", "from_stage_id", "to_stage_id", "at"],
        )
        await conn.copy_records_to_table(
            "deal_field_history",
            records=fields,
            columns=["id", "org_id", "deal_id", "field", "old_value", "new_value", "at"],
        )
        counts["deals"] += len(deals)
        counts["history"] += len(history)
        counts["fields"] += len(fields)
        deals.clear()
        history.clear()
        fields.clear()

    span = args.years * 365 * 86400.0
    for i in range(args.deals):
        deal_id = uuid.uuid4()
        # Several years, growing: a third more deals each year than the year before (u ** 0.8 leans
        # towards now); at least an hour old.
        created = now - timedelta(seconds=max(3600.0, span * (1 - rng.random() ** 0.8)))
        owner = rng.choice(users)
        currency = "CNY" if rng.random() < 0.6 else "USD"
        amount = Decimal(rng.randint(1_000, 5_000_000)) / 100
        path: list[tuple[str, datetime]] = [("prospect", created)]
        t, pos = created, 0
        for _ in range(rng.choice([2, 3, 3, 4, 5])):
            # mostly forward, sometimes a step back (a deal cooling off)
            new = max(0, min(4, pos + rng.choice([-1, 1, 1, 1, 2])))
            pos = new if new != pos else (pos - 1 if pos == 4 else pos + 1)
            t = t + timedelta(seconds=rng.uniform(3600, 12 * 86400))
            if t >= now:
                break
            path.append((OPEN[pos], t))
        roll = rng.random()
        status = "open"
        t_close = t + timedelta(seconds=rng.uniform(3600, 20 * 86400))
        # Most old deals are closed; recent ones are still open.
        if t_close < now and roll < 0.85:
            status = "won" if roll < 0.3 else "lost"
            if roll < 0.05 and t_close + timedelta(days=2) < now:  # lost, reopened, then won
                path.append(("lost", t_close))
                path.append(("negotiation", t_close + timedelta(days=1)))
                t_close = t_close + timedelta(days=2)
                status = "won"
            path.append((status, t_close))
        last_key, last_at = path[-1]
        probability = {"won": 100, "lost": 0}.get(last_key, PROBABILITY.get(last_key, 0))
        deals.append(
            (
                deal_id,
                org_id,
                pipeline_id,
                stage[last_key],
                f"Deal {i}",
                owner,
                amount,
                currency,
                Decimal(probability),
                False,
                (now + timedelta(days=rng.randint(-90, 180))).date(),
                status,
                "price" if status == "lost" else None,
                last_at,
                last_at,
                last_at if status != "open" else None,
                "{}",
                created,
                last_at,
                1,
            )
        )
        deal_ids.append((deal_id, created, status))
        previous = None
        state, prob = "open", "10"
        for name, value in (
            ("status", "open"),
            ("amount", str(amount)),
            ("currency", currency),
            ("probability", "10"),
            ("owner_id", str(owner)),
        ):
            fields.append((uuid.uuid4(), org_id, deal_id, name, "null", _json(value), created))
        for key, at in path:
            history.append((uuid.uuid4(), org_id, deal_id, pipeline_id, previous, stage[key], at))
            if previous is not None:
                new_state = key if key in ("won", "lost") else "open"
                new_prob = str({"won": 100, "lost": 0}.get(key, PROBABILITY.get(key, 0)))
                if new_state != state:
                    fields.append(
                        (uuid.uuid4(), org_id, deal_id, "status", _json(state), _json(new_state), at)
                    )
                if new_prob != prob:
                    fields.append(
                        (uuid.uuid4(), org_id, deal_id, "probability", _json(prob), _json(new_prob), at)
                    )
                state, prob = new_state, new_prob
            previous = stage[key]
        if len(deals) >= CHUNK:
            await flush()
    await flush()
    leads: list[tuple[Any, ...]] = []
    sources = ["web_form", "email", "webhook", "api", "import"]
    for i in range(args.leads):
        created = now - timedelta(seconds=max(3600.0, span * (1 - rng.random() ** 0.8)))
        contacted = created + timedelta(seconds=rng.uniform(60, 3 * 86400)) if rng.random() < 0.75 else None
        if contacted is not None and contacted >= now:
            contacted = None
        converted = deal_ids[rng.randrange(len(deal_ids))][0] if deal_ids and rng.random() < 0.3 else None
        status = "converted" if converted else rng.choice(["new", "working", "qualified", "unqualified"])
        owner = rng.choice(users) if rng.random() < 0.8 else None
        leads.append(
            (
                uuid.uuid4(),
                org_id,
                status,
                rng.choice(sources),
                "{}",
                "{}",
                "[]",
                0,
                "[]",
                owner is None,
                0,
                owner,
                contacted,
                converted,
                f"lead{i}@bench.example",
                created,
                created,
                1,
            )
        )
        if len(leads) >= CHUNK:
            await _copy_leads(conn, leads)
            leads.clear()
    await _copy_leads(conn, leads)
    print(
        f"loaded {counts['deals']} deals, {counts['history']} stage-history rows, {counts['fields']} "
        f"field-history rows, {args.leads} leads"
    )


async def _copy_leads(conn: asyncpg.Connection, leads: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(
        "leads",
        records=leads,
        columns=[
            "id",
            "org_id",
            "status",
            "source",
            "source_detail",
            "attributes",
            "tags",
            "score",
            "score_breakdown",
            "pooled",
            "touch_count",
            "owner_id",
            "first_contacted_at",
            "converted_deal_id",
            "email",
            "created_at",
            "updated_at",
            "version",
        ],
    )


SPEED = "EXTRACT(EPOCH FROM first_contacted_at - le.created_at)"
# The best hand-written SQL on the base tables for each endpoint's numbers ($1 org, $2 from, $3 to).
HAND_SQL: dict[str, str] = {
    "funnel": """
        WITH open_stages AS (
          SELECT id, row_number() OVER (ORDER BY position) AS pos FROM stages
          WHERE org_id = $1 AND kind = 'open'
            AND pipeline_id = (SELECT id FROM pipelines WHERE org_id = $1 AND is_default)),
        cohort AS (SELECT id, status, currency, amount FROM deals
                   WHERE org_id = $1 AND created_at >= $2 AND created_at < $3),
        reach AS (SELECT h.deal_id, max(o.pos) AS top
                  FROM deal_stage_history h JOIN cohort c ON c.id = h.deal_id
                  JOIN open_stages o ON o.id = h.to_stage_id WHERE h.org_id = $1 GROUP BY h.deal_id)
        SELECT c.status, c.currency, r.top, count(*), sum(c.amount)
        FROM cohort c LEFT JOIN reach r ON r.deal_id = c.id GROUP BY 1, 2, 3""",
    "pipeline": """
        SELECT stage_id, currency, count(*), sum(amount), sum(amount * probability / 100)
        FROM deals WHERE org_id = $1 AND status = 'open' GROUP BY 1, 2""",
    "win-rate": """
        SELECT status, currency, count(*), sum(amount) FROM deals
        WHERE org_id = $1 AND status IN ('won', 'lost') AND closed_at >= $2 AND closed_at < $3
        GROUP BY 1, 2""",
    "cycle": """
        WITH won AS (
          SELECT count(*), avg(EXTRACT(EPOCH FROM closed_at - created_at)),
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM closed_at - created_at)),
                 percentile_cont(0.75) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM closed_at - created_at))
          FROM deals WHERE org_id = $1 AND status = 'won' AND closed_at >= $2 AND closed_at < $3),
        s AS (
          SELECT to_stage_id, at, lead(at) OVER (PARTITION BY deal_id ORDER BY at, id) AS left_at
          FROM deal_stage_history WHERE org_id = $1),
        stays AS (
          SELECT to_stage_id, count(*), avg(EXTRACT(EPOCH FROM left_at - at)),
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM left_at - at))
          FROM s WHERE left_at >= $2 AND left_at < $3 GROUP BY 1)
        SELECT * FROM stays CROSS JOIN won""",
    "velocity": """
        SELECT currency, count(*) FILTER (WHERE status = 'open'),
               count(*) FILTER (WHERE status = 'won' AND closed_at >= $2 AND closed_at < $3),
               count(*) FILTER (WHERE status = 'lost' AND closed_at >= $2 AND closed_at < $3),
               avg(amount) FILTER (WHERE status = 'won' AND closed_at >= $2 AND closed_at < $3),
               avg(EXTRACT(EPOCH FROM closed_at - created_at))
                 FILTER (WHERE status = 'won' AND closed_at >= $2 AND closed_at < $3)
        FROM deals WHERE org_id = $1 GROUP BY 1""",
    "forecast": """
        SELECT to_char(d.expected_close_date, 'YYYY-MM'), s.forecast_category, d.currency, count(*),
               sum(d.amount),
               sum(d.amount * d.probability / 100)
        FROM deals d JOIN stages s ON s.id = d.stage_id WHERE d.org_id = $1 AND d.status = 'open'
        GROUP BY 1, 2, 3""",
    "lead-funnel": f"""
        SELECT count(*), count(first_contacted_at),
               count(*) FILTER (WHERE le.status IN ('qualified', 'converted')),
               count(converted_deal_id), count(*) FILTER (WHERE d.status = 'won'),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {SPEED})
                 FILTER (WHERE first_contacted_at IS NOT NULL),
               percentile_cont(0.9) WITHIN GROUP (ORDER BY {SPEED})
                 FILTER (WHERE first_contacted_at IS NOT NULL)
        FROM leads le LEFT JOIN deals d ON d.id = le.converted_deal_id
        WHERE le.org_id = $1 AND le.duplicate_of IS NULL AND le.deleted_at IS NULL
          AND le.created_at >= $2 AND le.created_at < $3""",
    "reps": """
        SELECT owner_id, status, currency, count(*), sum(amount), NULL::bigint, NULL::bigint FROM deals
        WHERE org_id = $1 AND status IN ('won', 'lost') AND closed_at >= $2 AND closed_at < $3
        GROUP BY 1, 2, 3
        UNION ALL
        SELECT owner_id, 'leads', NULL, count(*), NULL, count(first_contacted_at), count(converted_deal_id)
        FROM leads
        WHERE org_id = $1 AND duplicate_of IS NULL AND deleted_at IS NULL AND owner_id IS NOT NULL
          AND created_at >= $2 AND created_at < $3
        GROUP BY 1""",
}
# As-of reconstruction by hand: the last stage entered and the last amount/probability set before T.
HAND_AS_OF = """
    WITH st AS (SELECT DISTINCT ON (deal_id) deal_id, to_stage_id FROM deal_stage_history
                WHERE org_id = $1 AND at < $2 ORDER BY deal_id, at DESC),
    fv AS (SELECT DISTINCT ON (deal_id, field) deal_id, field, new_value FROM deal_field_history
           WHERE org_id = $1 AND at < $2 AND field IN ('amount', 'probability', 'currency')
           ORDER BY deal_id, field, at DESC)
    SELECT st.to_stage_id, c.new_value #>> '{}', count(*), sum((a.new_value #>> '{}')::numeric),
           sum((a.new_value #>> '{}')::numeric * (p.new_value #>> '{}')::numeric / 100)
    FROM st JOIN stages s ON s.id = st.to_stage_id AND s.kind = 'open'
    LEFT JOIN fv a ON a.deal_id = st.deal_id AND a.field = 'amount'
    LEFT JOIN fv p ON p.deal_id = st.deal_id AND p.field = 'probability'
    LEFT JOIN fv c ON c.deal_id = st.deal_id AND c.field = 'currency'
    GROUP BY 1, 2"""
# The trend on the base tables: every day's as-of in one statement, from the intervals each stage
# and each amount/probability/currency value held (the next entry of the same deal ends one).
HAND_TREND = """
    WITH days AS (
      SELECT d::date AS day, (d::date + 1)::timestamp AT TIME ZONE 'UTC' AS end_at
      FROM generate_series($2::date, $3::date - 1, interval '1 day') AS d),
    st AS (
      SELECT * FROM (
        SELECT deal_id, to_stage_id, at, lead(at) OVER (PARTITION BY deal_id ORDER BY at, id) AS until
        FROM deal_stage_history WHERE org_id = $1 AND at < ($3::date)::timestamp AT TIME ZONE 'UTC') x
      WHERE until IS NULL OR until >= ($2::date + 1)::timestamp AT TIME ZONE 'UTC'),
    fv AS (
      SELECT * FROM (
        SELECT deal_id, field, new_value #>> '{}' AS value, at,
               lead(at) OVER (PARTITION BY deal_id, field ORDER BY at, id) AS until
        FROM deal_field_history
        WHERE org_id = $1 AND field IN ('amount', 'probability', 'currency')
          AND at < ($3::date)::timestamp AT TIME ZONE 'UTC') x
      WHERE until IS NULL OR until >= ($2::date + 1)::timestamp AT TIME ZONE 'UTC')
    SELECT dd.day, st.to_stage_id, c.value, count(*), sum(a.value::numeric),
           sum(a.value::numeric * p.value::numeric / 100)
    FROM days dd
    JOIN st ON st.at < dd.end_at AND (st.until IS NULL OR st.until >= dd.end_at)
    JOIN stages s ON s.id = st.to_stage_id AND s.kind = 'open'
    LEFT JOIN fv a ON a.deal_id = st.deal_id AND a.field = 'amount' AND a.at < dd.end_at
                  AND (a.until IS NULL OR a.until >= dd.end_at)
    LEFT JOIN fv p ON p.deal_id = st.deal_id AND p.field = 'probability' AND p.at < dd.end_at
                  AND (p.until IS NULL OR p.until >= dd.end_at)
    LEFT JOIN fv c ON c.deal_id = st.deal_id AND c.field = 'currency' AND c.at < dd.end_at
                  AND (c.until IS NULL OR c.until >= dd.end_at)
    GROUP BY 1, 2, 3"""
# A hand-written statement slower than this (its warm-up run, in seconds) is timed by that run alone.
SLOW_HAND_SECONDS = 5.0


def rss_mb(pgid: int) -> float:
    """The largest RSS (MB) among the processes of a process group (the API's workers)."""
    best = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]))
        except (OSError, ProcessLookupError):
            continue
    return best / 1024


async def main() -> None:
    """Set up, load, time, print the table, clean up."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=None, help="default: deals / 5")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--years", type=int, default=3, help="deals and leads created over this many years")
    parser.add_argument("--trend-days", type=int, default=30, help="the trend's range (days up to today)")
    parser.add_argument("--keep", action="store_true", help="keep the loaded database (its name is printed)")
    parser.add_argument("--database", help="time again on a database a --keep run loaded (no load)")
    args = parser.parse_args()
    if args.leads is None:
        args.leads = args.deals // 5
    with bench_servers() as (admin_dsn, redis_url):
        await measure(args, admin_dsn, redis_url)


async def _timed(call: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def measure(args: argparse.Namespace, admin_dsn: str, redis_url: str) -> None:
    """Everything on a fresh database of the server at `admin_dsn`."""
    db_name = args.database or f"loudou_bench_{uuid.uuid4().hex[:8]}"
    dsn = database_dsn(admin_dsn, db_name)
    saved = Path(tempfile.gettempdir()) / f"{db_name}.json"
    if not args.database:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'CREATE DATABASE "{db_name}"')
        await admin.close()
    workdir = Path(tempfile.mkdtemp(prefix="loudou-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "LOUDOU_HOME": str(workdir),
        "LOUDOU_SECRET_KEY": "bench-" + "x" * 40,
        "LOUDOU_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "LOUDOU_ACCESS_LOG": "false",
        "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
    }
    try:
        run([str(BIN / "loudou"), "migrate"], env)
        if args.database:
            created = json.loads(saved.read_text()) if saved.exists() else await _admin_key(dsn)
        else:
            created = json.loads(
                run(
                    [
                        str(BIN / "loudou"),
                        "org",
                        "create",
                        "Bench",
                        "--admin-email",
                        "bench@example.com",
                        "--json",
                    ],
                    env,
                )
            )
        org_id = uuid.UUID(created["org_id"])
        conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://"))
        # The hand-written SQL gets the memory the API's metrics transactions get.
        await conn.execute(f"SET work_mem = '{Settings().metrics_work_mem}'")
        today = datetime.now(UTC).date()
        if args.database:
            have = await conn.fetchval(
                "SELECT count(*) FROM pipeline_snapshot_days WHERE org_id = $1", org_id
            )
            if have < args.trend_days + 1:  # the --keep run stopped before its snapshots
                started = time.perf_counter()
                await _snapshots(dsn, org_id, today, args.trend_days)
                print(f"daily snapshots: {time.perf_counter() - started:.1f} s")
            await _vacuum_precomputed(conn)  # a migration may have just filled one
        else:
            started = time.perf_counter()
            await load(conn, org_id, args)
            print(f"load: {time.perf_counter() - started:.0f} s")
            started = time.perf_counter()
            await _snapshots(dsn, org_id, today, args.trend_days)
            print(f"daily snapshots: {time.perf_counter() - started:.1f} s")
            if args.keep:
                saved.write_text(json.dumps(created))
        start, end = today.replace(year=today.year - 1), today + timedelta(days=1)
        t0 = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
        t1 = datetime.combine(end, datetime.min.time(), tzinfo=UTC)
        as_of = today - timedelta(days=30)
        trend_from = today - timedelta(days=args.trend_days)
        endpoints: list[tuple[str, str, dict[str, str], str, tuple[Any, ...]]] = [
            (name, name, {}, sql, (org_id, t0, t1)) for name, sql in HAND_SQL.items()
        ]
        at = datetime.combine(as_of + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        endpoints.insert(
            2, ("pipeline as_of", "pipeline", {"as_of": as_of.isoformat()}, HAND_AS_OF, (org_id, at))
        )
        endpoints.insert(
            3,
            (
                f"pipeline/trend {args.trend_days} d",
                "pipeline/trend",
                {"from": trend_from.isoformat(), "to": today.isoformat()},
                HAND_TREND,
                (org_id, trend_from, today),
            ),
        )
        endpoints.insert(0, ("definitions (no SQL)", "definitions", {}, "SELECT 1", ()))
        port = free_port()
        cmd = [str(BIN / "loudou"), "serve", "--workers", "2", "--port", str(port)]
        rows = []
        peak = 0.0
        with server(cmd, env, port, workdir / "serve.log") as proc:
            auth = {"Authorization": f"Bearer {created['api_key']}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=600, headers=auth
            ) as client:
                for label, path, params, sql, sql_args in endpoints:

                    async def call(path: str = path, params: dict[str, str] = params) -> None:
                        r = await client.get(f"/v1/metrics/{path}", params=params)
                        assert r.status_code == 200, r.text

                    used = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)

                    async def hand(sql: str = sql, sql_args: tuple[Any, ...] = sql_args[:used]) -> None:
                        await conn.fetch(sql, *sql_args)

                    await call()  # warm both up once
                    warm = await _timed(hand, 1)
                    api = await _timed(call, args.runs)
                    slow = warm > SLOW_HAND_SECONDS * 1000
                    base = warm if slow else await _timed(hand, args.runs)
                    if slow:
                        label += " *"
                    peak = max(peak, rss_mb(proc.pid))
                    rows.append((label, api, base))
        print()
        print(f"{'endpoint':<22}{'API ms (median)':>17}{'hand SQL ms':>14}{'ratio':>8}")
        for label, api, base in rows:
            print(f"{label:<22}{api:>17.1f}{base:>14.1f}{api / base if base else float('inf'):>8.2f}")
        deals, leads = (
            await conn.fetchval("SELECT count(*) FROM deals WHERE org_id = $1", org_id),
            await conn.fetchval("SELECT count(*) FROM leads WHERE org_id = $1", org_id),
        )
        print(f"API process peak RSS: {peak:.0f} MB ({deals} deals, {leads} leads)")
        if any(label.endswith(" *") for label, _, _ in rows):
            print(f"* hand SQL slower than {SLOW_HAND_SECONDS:.0f} s: timed by one run")
        await conn.close()
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if args.keep or args.database:
            print(f"kept database {db_name} (again: --database {db_name}; drop it when done)")
        else:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            await admin.close()


async def _admin_key(dsn: str) -> dict[str, str]:
    """A new API key of the Bench organisation's admin (a --keep run stopped before saving its own)."""
    from app.security import new_api_key

    token, prefix, digest = new_api_key()
    conn = await asyncpg.connect(dsn)
    try:
        org_id, user_id = await conn.fetchrow(
            "SELECT o.id, u.id FROM organisations o JOIN users u ON u.org_id = o.id "
            "WHERE o.name = 'Bench' AND u.email = 'bench@example.com'"
        )
        now = datetime.now(UTC)
        await conn.execute(
            """INSERT INTO api_keys
               (created_at, updated_at, org_id, id, user_id, name, prefix, key_hash, scopes)
               VALUES ($1, $1, $2, $3, $4, 'bench', $5, $6, '["*"]')""",
            now,
            org_id,
            uuid.uuid4(),
            user_id,
            prefix,
            digest,
        )
    finally:
        await conn.close()
    return {"org_id": str(org_id), "api_key": token}


async def _snapshots(dsn: str, org_id: uuid.UUID, today: date, trend_days: int) -> None:
    """Take the snapshots of the trend's days and of the as-of day (30 days ago) the way the cron
    job does (days already taken are kept)."""
    from sqlalchemy import text

    from app.db import create_engine, session_factory, tenant_session
    from app.services.metrics import snapshots

    # No statement timeout: on a busy machine one day's reconstruction over 1M deals can take minutes.
    engine = create_engine(Settings(database_url=dsn, redis_url="redis://unused", db_statement_timeout_ms=0))
    try:
        async with tenant_session(session_factory(engine), org_id) as session:
            have = set(
                (
                    await session.execute(
                        text("SELECT day FROM pipeline_snapshot_days WHERE org_id = :o"), {"o": org_id}
                    )
                )
                .scalars()
                .all()
            )
            for offset in sorted({30, *range(trend_days, 0, -1)}, reverse=True):
                if today - timedelta(days=offset) not in have:
                    await snapshots.take_snapshot(session, org_id, today - timedelta(days=offset), "UTC")
                    await session.commit()
            await session.commit()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
