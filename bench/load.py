"""A mixed, realistic load against `loudou serve --workers 2` and `loudou worker` on loopback.

    .venv/bin/python bench/load.py [--seconds 60] [--users 24] [--client-processes 2] [--arq-workers 1]

Intake through the three channels (web forms, raw e-mail, signed webhooks); reps listing,
reading and updating their leads and deals; quotes created, submitted, sent and accepted (each
on a new deal); BI pulling metrics and an export page. `users` virtual users, spread over
`client-processes` generator processes, each picks its next operation by weight and sends it as
soon as the last one answered (closed loop). Prints one table: per operation the count, rate, p50
and p99 latency and errors (every non-2xx is one; the target is 0); then the peak RSS of every
process (API workers, arq workers, PostgreSQL backends of the bench database in total, Redis) and
the generator's own CPU, so it can be seen not to be the bottleneck.
PostgreSQL and Redis: DATABASE_URL / REDIS_URL when set, else the local servers, else embedded
ones (bench/servers.py). A fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import redis
from standardwebhooks.webhooks import Webhook

try:  # run as a script, bench/ is on sys.path
    from intake import free_port, run, server
    from servers import bench_servers, database_dsn
except ImportError:
    from bench.intake import free_port, run, server
    from bench.servers import bench_servers, database_dsn

BIN = Path(sys.executable).parent

# Operation weights (per 100 picks): intake ~45, reps ~40, quotes ~5 flows, BI ~6.
WEIGHTS = {
    "form": 25,
    "email": 8,
    "webhook": 12,
    "rep_leads": 14,
    "rep_deals": 10,
    "quote_flow": 4,
    "bi_metrics": 5,
    "bi_export": 2,
}


class Recorder:
    """Latencies and errors per operation name."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.conflicts: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []

    def note(
        self, name: str, started: float, response: httpx.Response | None, error: str | None = None
    ) -> None:
        self.latencies[name].append(time.perf_counter() - started)
        if response is not None and response.status_code == 412:  # a background change won: re-read
            self.conflicts[name] += 1
            return
        if response is None or response.status_code >= 400:
            self.errors[name] += 1
            if len(self.samples) < 5:
                detail = error or f"{response.status_code} {response.text[:200]}" if response else error
                self.samples.append(f"{name}: {detail}")


class User:
    """One virtual user of a generator process."""

    def __init__(
        self, ctx: dict[str, Any], http: httpx.AsyncClient, rec: Recorder, rng: random.Random, rep: int
    ) -> None:
        self.ctx, self.http, self.rec, self.rng = ctx, http, rec, rng
        self.rep = rep % len(ctx["rep_keys"])  # a rep of its own: no two users edit one record at once
        self.rep_id = ctx["rep_ids"][self.rep]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.ctx['rep_keys'][self.rep]}"}

    async def call(self, name: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.rec.note(name, started, None, repr(exc))
            return None
        self.rec.note(name, started, response)
        return response

    def email(self) -> str:
        return f"load-{uuid.uuid4().hex[:12]}@example.com"

    async def form(self) -> None:
        body = {"email": self.email(), "name": "Load Visitor", "company": "Acme", "message": "Call me"}
        await self.call("intake form", "POST", self.ctx["form"], json=body)

    async def email_intake(self) -> None:
        message = EmailMessage()
        message["From"] = f"Load Sender <{self.email()}>"
        message["To"] = "sales@example.com"
        message["Subject"] = "Pricing question"
        message["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
        message.set_content(
            "Hello,\nplease send a quote for 20 seats.\n\nBest,\nLoad Sender\n+1 312 555 0147\n"
        )
        await self.call(
            "intake email",
            "POST",
            self.ctx["email"],
            content=message.as_bytes(),
            headers={"Content-Type": "message/rfc822"},
        )

    async def webhook(self) -> None:
        body = json.dumps({"email": self.email(), "name": "Hook Lead", "campaign": "load"})
        msg_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(self.ctx["webhook_secret"]).sign(msg_id, at, body),
            "content-type": "application/json",
        }
        await self.call("intake webhook", "POST", self.ctx["webhook"], content=body, headers=headers)

    async def rep_leads(self) -> None:
        r = await self.call("rep list leads", "GET", "/v1/leads", params={"limit": 25}, headers=self.auth())
        listed = r.json()["data"] if r is not None and r.status_code == 200 else []
        leads = [lead for lead in listed if lead["owner_id"] == self.rep_id]
        if not leads:
            return
        lead = self.rng.choice(leads)
        for _ in range(3):  # If-Match: a 412 (the worker changed it meanwhile) means read again
            r = await self.call("rep get lead", "GET", f"/v1/leads/{lead['id']}", headers=self.auth())
            if r is None or r.status_code != 200:
                return
            r = await self.call(
                "rep update lead",
                "PATCH",
                f"/v1/leads/{lead['id']}",
                json={"tags": ["called"], "status": "working"},
                headers={**self.auth(), "If-Match": r.headers["etag"]},
            )
            if r is None or r.status_code != 412:
                return

    async def rep_deals(self) -> None:
        r = await self.call("rep list deals", "GET", "/v1/deals", params={"limit": 25}, headers=self.auth())
        deals = [
            d
            for d in (r.json()["data"] if r is not None and r.status_code == 200 else [])
            if d["status"] == "open"
        ]
        if not deals:
            return
        deal = self.rng.choice(deals)
        for _ in range(3):
            r = await self.call("rep get deal", "GET", f"/v1/deals/{deal['id']}", headers=self.auth())
            if r is None or r.status_code != 200:
                return
            r = await self.call(
                "rep update deal",
                "PATCH",
                f"/v1/deals/{deal['id']}",
                json={"amount": f"{self.rng.randrange(1000, 90000)}.00"},
                headers={**self.auth(), "If-Match": r.headers["etag"]},
            )
            if r is None or r.status_code != 412:
                return

    async def quote_flow(self) -> None:
        r = await self.call(
            "deal create",
            "POST",
            "/v1/deals",
            json={"name": f"Load deal {uuid.uuid4().hex[:6]}", "amount": "20000.00", "currency": "USD"},
            headers=self.auth(),
        )
        if r is None or r.status_code != 201:
            return
        body = {"deal_id": r.json()["id"], "lines": [{"product_id": self.ctx["product"], "quantity": "3"}]}
        r = await self.call("quote create", "POST", "/v1/quotes", json=body, headers=self.auth())
        if r is None or r.status_code != 201:
            return
        quote = r.json()["id"]
        for step in ("submit", "send", "accept"):
            r = await self.call(f"quote {step}", "POST", f"/v1/quotes/{quote}/{step}", headers=self.auth())
            if r is None or r.status_code >= 400:
                return

    async def bi_metrics(self) -> None:
        admin = self.auth(self.ctx["admin_key"])
        for name in ("pipeline", "win-rate", "lead-funnel"):
            await self.call(f"BI metrics {name}", "GET", f"/v1/metrics/{name}", headers=admin)

    async def bi_export(self) -> None:
        admin = self.auth(self.ctx["admin_key"])
        await self.call("BI export leads", "GET", "/v1/export/leads", params={"limit": 500}, headers=admin)

    async def run(self, until: float) -> None:
        ops = {
            "form": self.form,
            "email": self.email_intake,
            "webhook": self.webhook,
            "rep_leads": self.rep_leads,
            "rep_deals": self.rep_deals,
            "quote_flow": self.quote_flow,
            "bi_metrics": self.bi_metrics,
            "bi_export": self.bi_export,
        }
        names, weights = list(WEIGHTS), list(WEIGHTS.values())
        while time.monotonic() < until:
            await ops[self.rng.choices(names, weights)[0]]()


async def _generate(ctx: dict[str, Any], users: int, seconds: float, seed: int) -> dict[str, Any]:
    rec = Recorder()
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=ctx["base"], limits=limits, timeout=60) as http:
        until = time.monotonic() + seconds
        rngs = [random.Random(seed * 1000 + i) for i in range(users)]
        await asyncio.gather(
            *[User(ctx, http, rec, rng, seed * users + i).run(until) for i, rng in enumerate(rngs)]
        )
    return {
        "latencies": dict(rec.latencies),
        "errors": dict(rec.errors),
        "conflicts": dict(rec.conflicts),
        "samples": rec.samples,
    }


def _generator_process(ctx: dict[str, Any], users: int, seconds: float, seed: int, out: Any) -> None:
    out.put(asyncio.run(_generate(ctx, users, seconds, seed)))


class Peaks:
    """Peak RSS per process group, sampled every 0.5 s in a thread."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name -> callable returning the psutil processes of the group
        self.peak: dict[str, float] = defaultdict(float)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for name, find in self.groups.items():
                try:
                    procs = find()
                    if name.endswith("(total)"):
                        self.peak[name] = max(
                            self.peak[name], sum(p.memory_info().rss for p in procs) / 2**20
                        )
                    else:
                        for p in procs:
                            key = f"{name} pid {p.pid}"
                            self.peak[key] = max(self.peak[key], p.memory_info().rss / 2**20)
                except (psutil.Error, OSError):
                    pass
            self.stop.wait(0.5)


def _children(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        found = [parent, *parent.children(recursive=True)]
        return [p for p in found if "resource_tracker" not in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def _backends(db_name: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if cmdline.startswith("postgres: ") and f" {db_name} " in f"{cmdline} ":
            found.append(p)
    return found


async def setup(base: str, admin_key: str, reps_wanted: int) -> dict[str, Any]:
    """Reps with keys, a round-robin rule, the three intake sources, a product, some deals."""
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=base, headers=admin, timeout=60) as c:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = await c.post(path, json=body)
            r.raise_for_status()
            return dict(r.json())

        reps, keys = [], []
        for i in range(reps_wanted):
            user = await post(
                "/v1/users", {"email": f"rep{i}-{uuid.uuid4().hex[:4]}@example.com", "role": "rep"}
            )
            reps.append(user["id"])
            keys.append((await post("/v1/api-keys", {"name": "load", "user_id": user["id"]}))["key"])
        await post("/v1/assignment-rules", {"name": "Round robin", "target_user_ids": reps})
        form = await post("/v1/intake-sources", {"kind": "form", "name": "Form", "rate_limit_per_minute": 0})
        email = await post(
            "/v1/intake-sources",
            {"kind": "email", "name": "Mail", "provider": "mime", "rate_limit_per_minute": 0},
        )
        hook = await post(
            "/v1/intake-sources", {"kind": "webhook", "name": "Hook", "rate_limit_per_minute": 0}
        )
        product = await post(
            "/v1/products", {"sku": "LOAD-1", "name": "Seat", "unit_price": "1200.00", "currency": "USD"}
        )
        for i in range(len(reps) * 3):
            await post(
                "/v1/deals",
                {
                    "name": f"Seed deal {i}",
                    "amount": "5000.00",
                    "currency": "USD",
                    "owner_id": reps[i % len(reps)],
                },
            )
    return {
        "base": base,
        "admin_key": admin_key,
        "rep_keys": keys,
        "rep_ids": reps,
        "form": form["endpoint"],
        "email": email["endpoint"],
        "webhook": hook["endpoint"],
        "webhook_secret": hook["secret"],
        "product": product["id"],
    }


def table(
    results: list[dict[str, Any]], seconds: float, peaks: dict[str, float], gen_cpu: list[float]
) -> int:
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    conflicts: dict[str, int] = defaultdict(int)
    for part in results:
        for name, count in part["conflicts"].items():
            conflicts[name] += count
        for name, values in part["latencies"].items():
            latencies[name].extend(values)
        for name, count in part["errors"].items():
            errors[name] += count
    print(f"\n{'operation':<24}{'count':>8}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'412s':>6}")
    total = 0
    for name in sorted(latencies):
        values = sorted(latencies[name])
        total += len(values)
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(
            f"{name:<24}{len(values):>8}{len(values) / seconds:>9.1f}"
            f"{statistics.median(values) * 1000:>9.0f}{p99 * 1000:>9.0f}{errors[name]:>8}{conflicts[name]:>6}"
        )
    print(f"{'all requests':<24}{total:>8}{total / seconds:>9.1f}{'':>18}{sum(errors.values()):>8}")
    print(f"\n{'process':<40}{'peak RSS MB':>12}")
    for name in sorted(peaks):
        print(f"{name:<40}{peaks[name]:>12.0f}")
    print(
        f"\nload generator: {len(gen_cpu)} processes, CPU "
        + ", ".join(f"{c:.0%}" for c in gen_cpu)
        + f" of one core each over {seconds:.0f} s; load average now {os.getloadavg()[0]:.2f}"
    )
    for part in results:
        for sample in part["samples"]:
            print("error sample:", sample)
    return sum(errors.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--arq-workers", type=int, default=1)
    args = parser.parse_args()
    with bench_servers() as (admin_dsn, redis_url):
        errors = measure(args, admin_dsn, redis_url)
    sys.exit(1 if errors else 0)


def measure(args: argparse.Namespace, admin_dsn: str, redis_url: str) -> int:
    db_name = f"loudou_load_{uuid.uuid4().hex[:8]}"
    dsn = database_dsn(admin_dsn, db_name)

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{db_name}"'))
    workdir = Path(tempfile.mkdtemp(prefix="loudou-load-"))
    queue_name = f"loudou-load:{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "LOUDOU_HOME": str(workdir),
        "LOUDOU_SECRET_KEY": "load-" + "x" * 40,
        "LOUDOU_LOG_LEVEL": "WARNING",
        "LOUDOU_QUEUE_NAME": queue_name,
        "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
        "LOUDOU_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    try:
        run([str(BIN / "loudou"), "migrate"], env)
        created = json.loads(
            run(
                [str(BIN / "loudou"), "org", "create", "Load", "--admin-email", "load@example.com", "--json"],
                env,
            )
        )
        port = free_port()
        with ExitStack() as stack:
            api = stack.enter_context(
                server(
                    [str(BIN / "loudou"), "serve", "--workers", "2", "--port", str(port)],
                    env,
                    port,
                    workdir / "api.log",
                )
            )
            workers = []
            for i in range(args.arq_workers):
                log = (workdir / f"worker{i}.log").open("ab")
                stack.callback(log.close)
                worker = subprocess.Popen(
                    [str(BIN / "loudou"), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
                stack.callback(lambda w=worker: (w.terminate(), w.wait(timeout=30)))
                workers.append(worker)
            per = max(1, args.users // args.client_processes)
            ctx = asyncio.run(
                setup(f"http://127.0.0.1:{port}", created["api_key"], per * args.client_processes)
            )
            redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
            peaks = Peaks(
                {
                    "API (loudou serve + uvicorn workers)": lambda: _children(api.pid),
                    "arq worker": lambda: [psutil.Process(w.pid) for w in workers],
                    "PostgreSQL backends, PSS (total)": lambda: _backends(db_name),
                    "Redis": lambda: [psutil.Process(redis_pid)],
                }
            )
            peaks.thread.start()
            spawn = multiprocessing.get_context("spawn")
            out = spawn.Queue()
            gens = [
                spawn.Process(target=_generator_process, args=(ctx, per, args.seconds, seed, out))
                for seed in range(args.client_processes)
            ]
            started = time.monotonic()
            for g in gens:
                g.start()
            cpu_start = {g.pid: 0.0 for g in gens}
            cpu_last = dict(cpu_start)
            results = []
            while len(results) < len(gens):
                for g in gens:  # the generators' CPU, read while they live
                    with suppress(psutil.Error):
                        cpu_last[g.pid] = sum(psutil.Process(g.pid).cpu_times()[:2])
                with suppress(queue.Empty):
                    results.append(out.get(timeout=0.5))
                    continue
                if any(g.exitcode not in (None, 0) for g in gens):
                    raise RuntimeError("a load generator process failed; see its traceback above")
            elapsed = time.monotonic() - started
            for g in gens:
                g.join(timeout=30)
            peaks.stop.set()
            peaks.thread.join()
            gen_cpu = [cpu_last[g.pid] / elapsed for g in gens]
            return table(results, args.seconds, dict(peaks.peak), gen_cpu)
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
