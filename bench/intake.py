"""Web-form intake throughput: `loudou serve --workers 2` against a bare FastAPI + one raw asyncpg INSERT.

    .venv/bin/python bench/intake.py [--seconds 20] [--concurrency 64]

Creates a fresh database (dropped at the end), migrates it, creates an organisation and a form
source, then drives each server in turn with `concurrency` httpx clients for `seconds`, each
post a new lead (unique email). Prints one table: requests/s, p50 and p99 latency, and the ratio
of Loudou to the raw-INSERT endpoint. Every process it starts is stopped, whatever happens.
PostgreSQL and Redis: DATABASE_URL / REDIS_URL when set, else the local servers at 127.0.0.1,
else embedded ones (see bench/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

try:  # run as a script, bench/ is on sys.path; imported as bench.intake (bench.assignment), it is not
    from servers import bench_servers, database_dsn
except ImportError:
    from bench.servers import bench_servers, database_dsn

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

RAW_APP = textwrap.dedent(
    '''
    """The baseline: one raw asyncpg INSERT per request, nothing else."""
    import json
    import os
    import uuid

    import asyncpg
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from contextlib import asynccontextmanager

    pool = None


    @asynccontextmanager
    async def lifespan(app):
        global pool
        pool = await asyncpg.create_pool(os.environ["BENCH_DSN"], min_size=4, max_size=10)
        yield
        await pool.close()


    app = FastAPI(lifespan=lifespan)


    @app.post("/intake")
    async def intake(request: Request) -> JSONResponse:
        body = await request.json()
        lead_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO bench_raw (id, email, payload, created_at) VALUES ($1, $2, $3, now())",
            lead_id,
            body.get("email"),
            json.dumps(body),
        )
        return JSONResponse({"lead_id": str(lead_id), "status": "created"}, status_code=201)
    '''
)


@dataclass
class Result:
    """What one run measured."""

    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(cmd: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group; stop the whole group on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited early; see {log}:\n{log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"{cmd} did not start listening on {port}")
        time.sleep(1.0)  # let every worker process finish its startup
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def _drive_one(
    url: str, *, seconds: float, concurrency: int, headers: dict[str, str], tag: str
) -> dict[str, Any]:
    """One client process: `concurrency` clients posting new leads for `seconds`."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0, headers=headers) as client:
        # Warm up the connections and the servers' caches before measuring.
        await asyncio.gather(
            *[client.post(url, json={"email": f"warm-{tag}-{k}@example.com"}) for k in range(concurrency)]
        )
        stop_at = time.perf_counter() + seconds

        async def one_client(n: int) -> None:
            nonlocal errors
            i = 0
            while time.perf_counter() < stop_at:
                i += 1
                body = {
                    "email": f"bench-{tag}-{n}-{i}-{uuid.uuid4().hex[:6]}@example.com",
                    "name": f"Bench Lead {n} {i}",
                    "utm_source": "bench",
                    "message": "Please call me back about pricing.",
                }
                started = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                    ok = r.status_code in (200, 201)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*[one_client(n) for n in range(concurrency)])
        elapsed = time.perf_counter() - began
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


def _client_process(args: tuple[str, float, int, dict[str, str], str]) -> dict[str, Any]:
    url, seconds, concurrency, headers, tag = args
    return asyncio.run(_drive_one(url, seconds=seconds, concurrency=concurrency, headers=headers, tag=tag))


def drive(
    name: str, url: str, *, seconds: float, concurrency: int, processes: int, headers: dict[str, str]
) -> Result:
    """`concurrency` httpx clients spread over `processes` client processes (one Python process
    cannot generate enough load to saturate either server), for `seconds`."""
    per = max(1, concurrency // processes)
    jobs = [(url, seconds, per, headers, f"{name[:3]}{p}") for p in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_client_process, jobs)
    latencies = [x for part in parts for x in part["latencies"]]
    return Result(
        name=name,
        requests=len(latencies),
        errors=sum(p["errors"] for p in parts),
        seconds=max(p["seconds"] for p in parts),
        latencies=latencies,
    )


def combine(parts: list[Result]) -> Result:
    """Rounds of one endpoint as one result."""
    return Result(
        name=parts[0].name,
        requests=sum(p.requests for p in parts),
        errors=sum(p.errors for p in parts),
        seconds=sum(p.seconds for p in parts),
        latencies=[x for p in parts for x in p.latencies],
    )


def run(cmd: list[str], env: dict[str, str]) -> str:
    """Run a command to completion; its stdout."""
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


async def main() -> None:
    """Set up, measure both servers, print the table, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    with bench_servers() as (admin_dsn, redis_url):
        await measure(args, admin_dsn, redis_url)


async def measure(args: argparse.Namespace, admin_dsn: str, redis_url: str) -> None:
    """Both servers on a fresh database of the server at `admin_dsn`; the table."""
    db_name = f"loudou_bench_{uuid.uuid4().hex[:8]}"
    dsn = database_dsn(admin_dsn, db_name)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{db_name}"')
    await conn.close()
    workdir = Path(tempfile.mkdtemp(prefix="loudou-bench-"))
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "LOUDOU_HOME": str(workdir),
        "LOUDOU_SECRET_KEY": "bench-" + "x" * 40,
        "LOUDOU_LOG_LEVEL": "WARNING",
        "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
        "BENCH_DSN": dsn,
    }
    results: list[Result] = []
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
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE bench_raw (id uuid PRIMARY KEY, email text, payload jsonb, created_at timestamptz)"
        )
        await conn.close()
        (workdir / "raw_insert_app.py").write_text(RAW_APP)
        port, raw_port = free_port(), free_port()
        loudou_cmd = [str(BIN / "loudou"), "serve", "--workers", "2", "--port", str(port)]
        raw_cmd = [
            str(BIN / "uvicorn"),
            "raw_insert_app:app",
            "--app-dir",
            str(workdir),
            "--workers",
            "2",
            "--port",
            str(raw_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with (
            server(loudou_cmd, env, port, workdir / "loudou.log"),
            server(raw_cmd, env, raw_port, workdir / "raw.log"),
        ):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                r = await c.post(
                    "/v1/intake-sources",
                    json={"kind": "form", "name": "Bench form", "rate_limit_per_minute": 0},
                    headers={"Authorization": f"Bearer {created['api_key']}"},
                )
                r.raise_for_status()
                endpoint = r.json()["endpoint"]
            # Alternate short rounds, so background load on the machine hits both sides alike.
            slice_seconds = args.seconds / args.rounds
            for _ in range(args.rounds):
                results.append(
                    drive(
                        "loudou POST /v1/intake/forms/{key}",
                        f"http://127.0.0.1:{port}{endpoint}",
                        seconds=slice_seconds,
                        concurrency=args.concurrency,
                        processes=args.client_processes,
                        headers={"Accept": "application/json"},
                    )
                )
                results.append(
                    drive(
                        "bare FastAPI + raw asyncpg INSERT",
                        f"http://127.0.0.1:{raw_port}/intake",
                        seconds=slice_seconds,
                        concurrency=args.concurrency,
                        processes=args.client_processes,
                        headers={},
                    )
                )
    finally:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await conn.close()

    loudou, raw = combine(results[0::2]), combine(results[1::2])
    print(
        f"\nweb-form intake, {args.concurrency} concurrent clients, {args.seconds:.0f} s each "
        f"({args.rounds} alternating rounds), in {args.client_processes} client processes, "
        f"uvicorn 2 workers, {os.cpu_count()} CPUs"
    )
    print(f"{'endpoint':<38} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'ratio':>6}")
    for res in (loudou, raw):
        print(
            f"{res.name:<38} {res.rps:>8.0f} {res.percentile(0.50):>8.1f} {res.percentile(0.99):>8.1f} "
            f"{res.errors:>7} {res.rps / raw.rps:>6.2f}"
        )
    median_ratio = statistics.median(loudou.latencies) / statistics.median(raw.latencies)
    print(f"median latency ratio (loudou / raw): {median_ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
