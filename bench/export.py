"""Export throughput: `GET /v1/export/deals` as NDJSON, CSV and Parquet next to PostgreSQL's COPY.

    .venv/bin/python bench/export.py [--deals 1000000]

Creates a fresh database (dropped at the end), migrates it, creates an organisation, inserts
`deals` deals with INSERT … SELECT generate_series (ordinary triggers off in that session: the
metrics rollups are not measured here; the change stamps are column defaults), then VACUUM
ANALYZE, starts `loudou serve` (one process), and pulls all of them in one page per format
while sampling the API process's RSS every 20 ms. In the same run it measures `COPY (SELECT
<the deals columns> FROM deals WHERE org_id = … ORDER BY change_xid, change_seq) TO STDOUT
(FORMAT csv)` through asyncpg, before and after the API runs (the faster counts). Prints one
table: rows, seconds, rows/s, the ratio to COPY, bytes and the API's peak RSS. Targets (DESIGN
§8): NDJSON and CSV at least 0.5x COPY; RSS under 250 MB. PostgreSQL and Redis as in bench/servers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import pyarrow.parquet as pq

try:  # run as a script, bench/ is on sys.path; imported as bench.export, it is not
    from intake import BIN, free_port, run, server
    from servers import bench_servers, database_dsn
except ImportError:  # pragma: no cover
    from bench.intake import BIN, free_port, run, server
    from bench.servers import bench_servers, database_dsn

DEAL_COLUMNS = (
    "id, version, created_at, updated_at, pipeline_id, stage_id, name, account_id, contact_id, lead_id, "
    "owner_id, amount, currency, probability, probability_overridden, expected_close_date, status, "
    "lost_reason, lost_note, stage_entered_at, last_activity_at, closed_at, attributes"
)
INSERT_DEALS = """
    INSERT INTO deals (id, org_id, version, created_at, updated_at, pipeline_id, stage_id, name, owner_id,
                       amount, currency, probability, probability_overridden, expected_close_date, status,
                       stage_entered_at, last_activity_at, attributes)
    SELECT gen_random_uuid(), $1, 1, now() - g * interval '1 second', now(), $2, $3, 'Deal ' || g, $4,
           (g % 1000000) / 100.0, CASE WHEN g % 3 = 0 THEN 'USD' ELSE 'CNY' END, 10, false,
           current_date + (g % 90)::int, 'open', now(), now(), jsonb_build_object('n', g)
    FROM generate_series($5::bigint, $6::bigint) AS g
"""


@dataclass
class Measured:
    """One pull: what, how many rows and bytes, how long, the API's peak RSS."""

    what: str
    rows: int
    seconds: float
    size: int
    peak_rss: int | None = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


class RssSampler:
    """The peak resident set of a process (and its children) sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += child.memory_info().rss
        return int(total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def copy_baseline(dsn: str, org_id: str) -> Measured:
    """COPY of the same columns and rows, in the export's order, to a sink that only counts."""
    conn = await asyncpg.connect(dsn)
    size = 0

    async def sink(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        start = time.perf_counter()
        status = await conn.copy_from_query(
            f"SELECT {DEAL_COLUMNS} FROM deals WHERE org_id = $1 ORDER BY change_xid, change_seq",
            uuid.UUID(org_id),
            output=sink,
            format="csv",
        )
        seconds = time.perf_counter() - start
    finally:
        await conn.close()
    return Measured("COPY (SELECT …) TO STDOUT, csv", int(status.split()[-1]), seconds, size)


async def pull(base: str, key: str, fmt: str, rows: int, pid: int) -> Measured:
    """One page of every deal in `fmt`, streamed and counted; the API's RSS sampled meanwhile."""
    size = 0
    lines = 0
    parquet = io.BytesIO() if fmt == "parquet" else None
    params: dict[str, str | int] = {"format": fmt, "limit": rows}
    async with httpx.AsyncClient(base_url=base, timeout=3600) as http:
        with RssSampler(pid) as rss:
            start = time.perf_counter()
            async with http.stream(
                "GET", "/v1/export/deals", params=params, headers={"Authorization": f"Bearer {key}"}
            ) as r:
                r.raise_for_status()
                async for chunk in r.aiter_raw():
                    size += len(chunk)
                    if parquet is not None:
                        parquet.write(chunk)
                    else:
                        lines += chunk.count(b"\n")
            seconds = time.perf_counter() - start
    if parquet is not None:
        count = pq.ParquetFile(parquet).metadata.num_rows
    else:
        count = lines - (1 if fmt == "csv" else 0)  # the header
    return Measured(f"GET /v1/export/deals?format={fmt}", count, seconds, size, rss.peak)


async def measure(admin_dsn: str, redis_url: str, deals: int) -> list[Measured]:
    """Set up a database with `deals` deals, measure COPY and the three formats, drop it."""
    db_name = f"loudou_bench_{uuid.uuid4().hex[:8]}"
    dsn = database_dsn(admin_dsn, db_name)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{db_name}"')
    await conn.close()
    workdir = Path(tempfile.mkdtemp(prefix="loudou-bench-export-"))
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "LOUDOU_HOME": str(workdir),
        "LOUDOU_SECRET_KEY": "bench-" + "x" * 40,
        "LOUDOU_LOG_LEVEL": "WARNING",
        "LOUDOU_ACCESS_LOG": "false",
        "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
    }
    results: list[Measured] = []
    try:
        run([str(BIN / "loudou"), "migrate"], env)
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
        org_id = created["org_id"]
        conn = await asyncpg.connect(dsn)
        try:
            pipeline_id, stage_id = await conn.fetchrow(
                "SELECT p.id, s.id FROM pipelines p JOIN stages s ON s.pipeline_id = p.id "
                "WHERE p.org_id = $1 ORDER BY s.position LIMIT 1",
                uuid.UUID(org_id),
            )
            # The metrics rollup triggers on deals update one summary row per inserted deal, which
            # a bulk insert of this size turns into hours; they are not what is measured here, so
            # this session skips ordinary triggers. The export's change stamps are column
            # defaults, so every row is stamped as the application's writes stamp it.
            await conn.execute("SET session_replication_role = replica")
            started = time.perf_counter()
            step = 200_000
            for first in range(1, deals + 1, step):
                last = min(deals, first + step - 1)
                await conn.execute(
                    INSERT_DEALS,
                    uuid.UUID(org_id),
                    pipeline_id,
                    stage_id,
                    uuid.UUID(created["user_id"]),
                    first,
                    last,
                )
            await conn.execute("VACUUM ANALYZE deals")
            print(f"inserted {deals} deals in {time.perf_counter() - started:.1f} s")
        finally:
            await conn.close()

        results.append(await copy_baseline(dsn, org_id))
        port = free_port()
        with server(
            [str(BIN / "loudou"), "serve", "--port", str(port)], env, port, workdir / "loudou.log"
        ) as proc:
            base = f"http://127.0.0.1:{port}"
            for fmt in ("ndjson", "csv", "parquet"):  # warm up: pool, compiled statements, imports
                await pull(base, created["api_key"], fmt, 10, proc.pid)
            for fmt in ("ndjson", "csv", "parquet"):
                results.append(await pull(base, created["api_key"], fmt, deals, proc.pid))
        results.append(await copy_baseline(dsn, org_id))
    finally:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await conn.close()
    return results


def table(results: list[Measured]) -> str:
    """One markdown table; ratios against the faster of the two COPY runs."""
    copies = [r for r in results if r.what.startswith("COPY")]
    best = max(copies, key=lambda r: r.rate)
    lines = [
        "| what | rows | seconds | rows/s | × COPY | MB | API peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = [best] + [r for r in results if not r.what.startswith("COPY")]
    for r in shown:
        rss = f"{r.peak_rss / 2**20:.0f}" if r.peak_rss else "—"
        lines.append(
            f"| {r.what} | {r.rows:,} | {r.seconds:.2f} | {r.rate:,.0f} | {r.rate / best.rate:.2f} "
            f"| {r.size / 2**20:.1f} | {rss} |"
        )
    return "\n".join(lines)


async def main() -> None:
    """Parse arguments, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    args = parser.parse_args()
    with bench_servers() as (admin_dsn, redis_url):
        results = await measure(admin_dsn, redis_url, args.deals)
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
