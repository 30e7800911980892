"""Planner statistics for young tables.

PostgreSQL's autovacuum looks at a database about once a minute (`autovacuum_naptime`), so a
table that is filling up for the first time (a new installation, a new organisation's first
intake, a table just loaded by COPY) runs without statistics for up to a minute. Plans made then
are kept: the pooled connections cache them (prepared statements, foreign-key checks, PL/pgSQL),
and with no statistics the planner cannot tell a unique key from the leading `org_id` of another
index. Measured on a fresh database: the foreign-key check of every new activity read
`leads (org_id, change_xid, change_seq)` with `id` as a filter, a scan of the organisation's
whole lead table per check, until an ANALYZE replaced the plans (intake then ran 1.7x faster).

So a table is analysed as soon as it has at least doubled since it was last analysed (never
analysed counts as empty), once it has seen `MIN_CHANGES` changes. ANALYZE invalidates the
cached plans of every connection, which are then made again with the new statistics.

A big table has the same problem with a new organisation: statistics taken before it existed
say its `org_id` matches no row, so every index that starts with `org_id` looks as cheap as the
primary key, and the one with the best physical correlation wins: measured with a 1M-lead
organisation in the database, each foreign-key check of a new organisation's activity or
decision read `(org_id, change_xid, change_seq)` with `id` as a filter, a scan of that
organisation's leads, until autovacuum's next ANALYZE of the table (after 10 % of it changed).
So a table is also analysed once `BIG_CHANGES` rows and 1 % of it have changed and its
statistics are over `MIN_AGE` old: a new organisation is known after its first 10,000 rows.

These analyses take a smaller sample than PostgreSQL's default (`STATISTICS_TARGET` 30: 9,000
rows, not 30,000): what they are for — an organisation's share of a table, which columns are
unique — shows in it as well, and under sustained intake they ran about once a minute on each
growing table. Measured on a 60,000-lead table: 97 ms against 337 ms at the default target; in
the half-capacity assignment benchmark the default-target rounds were ~13 % of PostgreSQL's
time. Autovacuum, where it runs, still analyses with the server's own target.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = structlog.get_logger("loudou.maintenance")

MIN_CHANGES = 500
BIG_CHANGES = 10_000
MIN_AGE_SECONDS = 60
EVERY_SECONDS = 2.0
STATISTICS_TARGET = 30

# One process at a time (the others skip the round); held until the round's commit.
_ROUND_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext('loudou.analyze_young_tables'))")

# reltuples is -1 for a table never analysed (PostgreSQL 14+), 0 for one analysed while empty.
_DOUBLED = text(
    """
    SELECT c.oid::regclass::text AS name, s.n_mod_since_analyze AS changes, c.reltuples AS rows
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema()
      AND (
        (s.n_mod_since_analyze >= :min_changes AND s.n_mod_since_analyze >= c.reltuples)
        OR (
          s.n_mod_since_analyze >= greatest(:big_changes, 0.01 * c.reltuples)
          AND coalesce(greatest(s.last_analyze, s.last_autoanalyze), '-infinity')
              < now() - make_interval(secs => :min_age)
        )
      )
    ORDER BY s.n_mod_since_analyze DESC
    """
)


async def analyze_young_tables(
    session: AsyncSession,
    *,
    min_changes: int = MIN_CHANGES,
    big_changes: int = BIG_CHANGES,
    min_age: float = MIN_AGE_SECONDS,
) -> list[str]:
    """ANALYZE (a `STATISTICS_TARGET` sample) every table of the schema that has at least doubled
    since its last analysis, or has had `big_changes` and 1 % of it changed since one over
    `min_age` seconds ago, in the session's transaction (the statistics take effect at its
    commit); the names analysed. Nothing when another process is at it (an advisory lock held
    to the commit); a table that another ANALYZE or VACUUM holds is left for the next round."""
    if not (await session.execute(_ROUND_LOCK)).scalar_one():
        return []
    await session.execute(text("SET LOCAL lock_timeout = '200ms'"))
    await session.execute(text(f"SET LOCAL default_statistics_target = {STATISTICS_TARGET}"))
    params = {"min_changes": min_changes, "big_changes": big_changes, "min_age": min_age}
    rows = (await session.execute(_DOUBLED, params)).all()
    done: list[str] = []
    for name, changes, tuples in rows:
        try:
            async with session.begin_nested():
                await session.execute(text(f"ANALYZE {name}"))  # name: regclass output, quoted
        except DBAPIError as exc:
            log.info("maintenance.analyze_skipped", table=name, error=str(exc.orig))
            continue
        log.info("maintenance.analyzed", table=name, changes=changes, rows_before=max(tuples, 0))
        done.append(name)
    return done


async def keep_statistics_fresh(
    sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event, *, every: float = EVERY_SECONDS
) -> None:
    """Run `analyze_young_tables` every `every` seconds until `stop` is set (each API process
    runs it; the advisory lock makes one of them do a round). Errors wait for the next round."""
    while not stop.is_set():
        try:
            async with sessions() as session:
                await analyze_young_tables(session)
                await session.commit()
        except Exception as exc:  # the database may be restarting: try again next round
            log.info("maintenance.round_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
