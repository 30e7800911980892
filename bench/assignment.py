"""Lead accepted -> lead assigned: `loudou serve --workers 2` with two `loudou worker` processes.

    .venv/bin/python -m bench.assignment [--leads 90] [--concurrency 64] [--kill-worker]

Creates a fresh database (dropped at the end), an organisation with three reps and a round-robin
rule, a form intake source; posts `--leads` leads concurrently to the form endpoint, waits until
every lead has its assignment decision, and prints one table: leads per rep, decisions per lead,
and the time from the lead row's creation to its decision (p50, p99, max), both server-side
timestamps. `--kill-worker` SIGKILLs one worker halfway through the posts and starts another:
no lead may be lost or assigned twice. Every process it starts is stopped, whatever happens.
PostgreSQL and Redis: as bench/intake.py finds them (bench/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx

from bench.intake import BIN, ROOT, free_port, run, server
from bench.servers import bench_servers, database_dsn


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A `loudou worker` in its own process group."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "loudou"), "worker"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process group (SIGKILL if it lingers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def main() -> None:
    """Set up, post, wait for every decision, print the table, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=90)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kill-worker", action="store_true")
    args = parser.parse_args()

    with bench_servers() as (admin_dsn, redis_url):
        await measure(args, admin_dsn, redis_url)


async def measure(args: argparse.Namespace, admin_dsn: str, redis_url: str) -> None:
    """Post the leads to a fresh database of the server at `admin_dsn`; wait; the table."""
    db_name = f"loudou_bench_{uuid.uuid4().hex[:8]}"
    dsn = database_dsn(admin_dsn, db_name)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{db_name}"')
    await conn.close()
    workdir = Path(tempfile.mkdtemp(prefix="loudou-bench-"))
    print(f"logs in {workdir}")
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "LOUDOU_HOME": str(workdir),
        "LOUDOU_SECRET_KEY": "bench-" + "x" * 40,
        "LOUDOU_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
        "LOUDOU_QUEUE_NAME": f"loudou-bench:{uuid.uuid4().hex[:6]}",
    }
    workers: list[subprocess.Popen[bytes]] = []
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
        auth = {"Authorization": f"Bearer {created['api_key']}"}
        port = free_port()
        cmd = [str(BIN / "loudou"), "serve", "--workers", "2", "--port", str(port)]
        with server(cmd, env, port, workdir / "serve.log"):
            workers = [start_worker(env, workdir / f"worker{i}.log") for i in range(2)]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                reps = []
                for i in range(3):
                    r = await c.post(
                        "/v1/users", json={"email": f"rep{i}@bench.test", "name": f"Rep {i}"}, headers=auth
                    )
                    r.raise_for_status()
                    reps.append(r.json()["id"])
                r = await c.post(
                    "/v1/assignment-rules",
                    json={"name": "Round robin", "target_user_ids": reps, "strategy": "round_robin"},
                    headers=auth,
                )
                r.raise_for_status()
                r = await c.post(
                    "/v1/intake-sources",
                    json={"kind": "form", "name": "Bench form", "rate_limit_per_minute": 0},
                    headers=auth,
                )
                r.raise_for_status()
                endpoint = r.json()["endpoint"]
                await asyncio.sleep(1.5)  # the workers are up and polling

                gate = asyncio.Semaphore(args.concurrency)
                statuses: Counter[int] = Counter()

                async def post(i: int) -> None:
                    async with gate:
                        resp = await c.post(
                            endpoint,
                            json={
                                "name": f"Lead {i}",
                                "email": f"lead{i}-{uuid.uuid4().hex[:6]}@example.com",
                            },
                            headers={"Accept": "application/json"},
                        )
                        statuses[resp.status_code] += 1

                started = time.monotonic()
                half = args.leads // 2
                await asyncio.gather(*[post(i) for i in range(half)])
                if args.kill_worker:
                    os.killpg(workers[0].pid, signal.SIGKILL)
                    workers[0].wait()
                    workers.append(start_worker(env, workdir / "worker-replacement.log"))
                await asyncio.gather(*[post(i) for i in range(half, args.leads)])
                post_seconds = time.monotonic() - started

            db = await asyncpg.connect(dsn)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    decided = await db.fetchval("SELECT count(DISTINCT lead_id) FROM assignment_decisions")
                    if decided >= args.leads:
                        break
                    await asyncio.sleep(0.2)
                rows = await db.fetch(
                    """
                    SELECT l.id, l.owner_id, extract(epoch FROM d.created_at - l.created_at) AS seconds,
                           count(*) OVER (PARTITION BY l.id) AS decisions
                    FROM leads l JOIN assignment_decisions d ON d.lead_id = l.id
                    """
                )
                lead_count = await db.fetchval("SELECT count(*) FROM leads")
            finally:
                await db.close()
        latencies = [float(r["seconds"]) for r in rows]
        per_rep = Counter(str(r["owner_id"]) for r in rows)
        print()
        print(
            "| leads posted | HTTP statuses | leads stored | decided | max decisions/lead | per rep | "
            "post time | accepted->assigned p50 | p99 | max |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {args.leads} | {dict(statuses)} | {lead_count} | {len(rows)} | "
            f"{max((r['decisions'] for r in rows), default=0)} | {sorted(per_rep.values())} | "
            f"{post_seconds:.2f} s | "
            f"{percentile(latencies, 0.5) * 1000:.0f} ms | {percentile(latencies, 0.99) * 1000:.0f} ms | "
            f"{max(latencies) * 1000:.0f} ms |"
        )
        if args.kill_worker:
            print("(one worker was SIGKILLed halfway and replaced)")
    finally:
        for proc in workers:
            stop(proc)
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
