"""Web-form intake under wrk: `loudou serve --workers 2` against a bare FastAPI + one raw asyncpg INSERT.

    .venv/bin/python -m bench.intake [--leads 1000000] [--rounds 3] [--seconds 10] [--conns 64]

Creates a fresh database (dropped at the end), migrates it, makes two organisations: one empty
and one holding `--leads` leads loaded by COPY (Chinese and Latin names and companies, a few
percent of them sharing a company or a name, as real lead tables do), each with a form source.
Starts both servers (uvicorn, 2 workers each) and drives them with wrk (C; `apt-get install wrk`),
whose Lua script (bench/intake_wrk.lua, written out with the name lists) makes every body unique, in
alternating rounds: for each body (`min`: email, name, utm_source, message; `full`: unique email,
unique valid Chinese mobile, a name, one of 500 companies, message, utm) and each organisation, the
organisations taking turns round by round. Prints one table: req/s (median of rounds), p50, p99,
errors, rows stored, the ratio to the raw endpoint, each server's peak RSS, the new PostgreSQL
connections opened during the measured rounds (pg_stat_database.sessions; `young`: backends alive at
a round's end whose pg_stat_activity.backend_start falls inside it), the CPU wrk itself used (so it
is seen not to be the bottleneck), and the CPU a request cost the server's processes (`srv ms/req`)
and every PostgreSQL process on the machine (`pg ms/req`: backends, autovacuum, WAL writer; read
from /proc). `--assign-at 0.5` also runs two `loudou worker`s and a round-robin rule over three
reps, loads intake at that fraction of the measured full-form rate for `--assign-seconds` (wrk -R is
not in Debian's wrk: a fixed number of connections, each pausing between posts, paces it), and
prints accepted -> assigned latency from the database's own timestamps, queue depth over time and
the per-rep split.
PostgreSQL and Redis: DATABASE_URL / REDIS_URL when set, else the local servers at 127.0.0.1,
else embedded ones (see bench/servers.py). Every process it starts is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
    from contextlib import asynccontextmanager

    import asyncpg
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

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

SURNAMES_ZH = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁"
)
GIVEN_ZH = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "娟",
    "涛",
    "明",
    "超",
    "秀英",
    "霞",
    "平",
    "刚",
    "桂英",
    "建华",
    "文",
    "华",
    "金凤",
    "志强",
    "海燕",
    "俊杰",
    "子涵",
]
FIRST_LATIN = [
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "Lukas",
    "Sofia",
    "Mateo",
    "Emma",
    "Noah",
    "Olivia",
    "Liam",
    "Chloé",
    "Jörg",
    "Aiko",
    "Ravi",
    "Fatima",
    "Ivan",
    "Ana",
    "Pierre",
    "Giulia",
    "Sven",
    "Marta",
    "Kenji",
    "Wei",
]
LAST_LATIN = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Müller",
    "Schmidt",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Nguyen",
    "Kim",
    "Silva",
    "Novak",
    "Ivanova",
    "Chen",
    "Wang",
    "Martin",
    "Bernard",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Moore",
]
STEMS_ZH = [
    "华为",
    "腾讯",
    "阿里",
    "百度",
    "京东",
    "美团",
    "小米",
    "字节",
    "网易",
    "携程",
    "海尔",
    "格力",
    "比亚迪",
    "联想",
    "中兴",
    "大疆",
    "蔚来",
    "顺丰",
    "万科",
    "招商",
    "平安",
    "宁德",
    "汇川",
    "迈瑞",
    "金蝶",
]
TRADES_ZH = ["科技", "信息技术", "网络", "软件", "电子", "贸易", "咨询", "制造", "物流", "医疗"]
FORMS_ZH = ["有限公司", "股份有限公司"]
STEMS_LATIN = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Wonka",
    "Oscorp",
    "Aperture",
    "Nakatomi",
    "Massive",
    "Pied Piper",
    "Gekko",
    "Dunder",
    "Monarch",
    "Prestige",
    "Sirius",
    "Virtucon",
    "Zorg",
    "Blue Sun",
]
TRADES_LATIN = [
    "Systems",
    "Software",
    "Logistics",
    "Foods",
    "Labs",
    "Energy",
    "Media",
    "Robotics",
    "Analytics",
    "Health",
]
FORMS_LATIN = ["Ltd", "GmbH", "Inc", "SA", "AG", "Corp", "LLC", "BV"]
MOBILE_PREFIXES = [
    "139",
    "138",
    "137",
    "136",
    "135",
    "150",
    "151",
    "152",
    "157",
    "158",
    "159",
    "182",
    "183",
    "187",
    "188",
    "130",
    "131",
    "132",
    "155",
    "156",
    "185",
    "186",
    "133",
    "153",
    "180",
    "181",
    "189",
    "177",
    "173",
    "199",
    "166",
    "198",
    "147",
    "178",
    "176",
    "175",
]


def companies(n: int = 500) -> list[str]:
    """`n` company names, half Chinese and half Latin, fixed (the same list every run)."""
    rng = random.Random(500)
    out: set[str] = set()
    while len(out) < n:
        if len(out) % 2:
            out.add(rng.choice(STEMS_ZH) + rng.choice(TRADES_ZH) + rng.choice(FORMS_ZH))
        else:
            out.add(f"{rng.choice(STEMS_LATIN)} {rng.choice(TRADES_LATIN)} {rng.choice(FORMS_LATIN)}")
    return sorted(out)


def person(rng: random.Random) -> str:
    """A realistic name: Chinese (surname + one or two given characters) or Latin."""
    if rng.random() < 0.5:
        return (
            rng.choice(SURNAMES_ZH)
            + rng.choice(GIVEN_ZH)
            + (rng.choice(GIVEN_ZH) if rng.random() < 0.4 else "")
        )
    return f"{rng.choice(FIRST_LATIN)} {rng.choice(LAST_LATIN)}"


def lua_list(items: list[str]) -> str:
    return "{" + ",".join(json.dumps(x, ensure_ascii=False) for x in items) + "}"


WRK_LUA = """
-- Written by bench/intake.py. POST a web-form lead, unique per request (dedupe never merges).
-- BODY=min: email, name, utm_source, message; BODY=full: + unique valid mobile, one of 500 companies.
-- BODY=merge: a full form (no phone) from one of 2,000 addresses: after the first, each post merges.
-- PAUSE_MS > 0: each connection waits that long after each answer (a paced, open-ended load).
local counter = 0
local tag = os.getenv("RUN_TAG") or "x"
local full = os.getenv("BODY") == "full"
local prefix = os.getenv("PHONE_PREFIX") or "139"
local pause = tonumber(os.getenv("PAUSE_MS") or "0")
local companies = %(companies)s
local surnames = %(surnames)s
local given = %(given)s
local first = %(first)s
local last = %(last)s
local threads = 0
function setup(thread)
  thread:set("tidx", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed(tonumber(string.sub(tag, 1, 6), 16) + (tidx or 0))
end
local function pick(t) return t[math.random(1, #t)] end
local function person()
  if math.random() < 0.5 then
    return pick(surnames) .. pick(given) .. (math.random() < 0.4 and pick(given) or "")
  end
  return pick(first) .. " " .. pick(last)
end
function request()
  counter = counter + 1
  local who = string.format("%%s-%%d-%%d", tag, tidx or 0, counter)
  local body
  if full then
    -- 8 digits after the prefix: the thread (1) and its counter (7): unique within the run
    local n = (tidx or 0) * 10000000 + counter
    body = string.format(
      '{"name":"%%s","email":"lead-%%s@example.com","phone":"+86 %%s %%04d %%04d",' ..
      '"company":"%%s","message":"Please send a quote for 25 seats.",' ..
      '"utm_source":"newsletter","utm_campaign":"spring"}',
      person(), who, prefix, math.floor(n / 10000) %% 10000, n %% 10000, pick(companies))
  else
    body = string.format(
      '{"email":"bench-%%s@example.com","name":"Bench Lead %%s","utm_source":"bench",' ..
      '"message":"Please call me back about pricing."}', who, who)
  end
  if os.getenv("BODY") == "merge" then
    body = string.format(
      '{"name":"%%s","email":"again-%%d@example.com","company":"%%s",' ..
      '"message":"Following up on my request.","utm_source":"newsletter","utm_campaign":"spring"}',
      person(), math.random(1, 2000), pick(companies))
  end
  local headers = {["Content-Type"] = "application/json", ["Accept"] = "application/json"}
  return wrk.format("POST", nil, headers, body)
end
function delay()
  return pause
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_s":%%.3f,"rps":%%.1f,"p50_ms":%%.3f,"p99_ms":%%.3f,' ..
    '"err_connect":%%d,"err_read":%%d,"err_write":%%d,"err_status":%%d,"err_timeout":%%d}\\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def write_lua(path: Path) -> None:
    """The wrk script, with the name and company lists in it."""
    path.write_text(
        WRK_LUA
        % {
            "companies": lua_list(companies()),
            "surnames": lua_list(list(SURNAMES_ZH)),
            "given": lua_list(GIVEN_ZH),
            "first": lua_list(FIRST_LATIN),
            "last": lua_list(LAST_LATIN),
        }
    )


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
        stop(proc)


@contextmanager
def background(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process without a port (a worker), in its own process group, stopped on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run(cmd: list[str], env: dict[str, str]) -> str:
    """Run a command to completion; its stdout."""
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def rss_mb(pgid: int) -> float:
    """The largest RSS (MB) among the processes of a process group (one API worker)."""
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


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: str) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def cpu_seconds(pgids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process group in `pgids`, and of every PostgreSQL process on
    this machine ("postgres": backends, autovacuum, WAL writer) under that key."""
    total = dict.fromkeys([*pgids, "postgres"], 0.0)
    by_pgid = {pgid: name for name, pgid in pgids.items()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            name = "postgres" if comm == "postgres" else by_pgid.get(os.getpgid(int(pid)))
        except (OSError, ProcessLookupError):
            continue
        if name is not None:
            total[name] += _cpu_s(pid)
    return total


class PeakRss:
    """Samples the largest process RSS of some process groups every 0.25 s while it runs."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups
        self.peak = dict.fromkeys(groups, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, pgid in self.groups.items():
                self.peak[name] = max(self.peak[name], rss_mb(pgid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


_prefixes = iter(MOBILE_PREFIXES * 8)


def wrk(
    lua: Path, url: str, *, body: str, seconds: float, conns: int, threads: int, pause_ms: int = 0
) -> dict[str, Any]:
    """One wrk run; its summary, with the CPU seconds wrk itself used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {
        **os.environ,
        "RUN_TAG": uuid.uuid4().hex[:10],
        "BODY": body,
        "PHONE_PREFIX": next(_prefixes),
        "PAUSE_MS": str(pause_ms),
    }
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{round(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line[9:])
            result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return result
    raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")


COPY_CHUNK = 50_000


async def load_leads(dsn: str, org_id: uuid.UUID, count: int) -> float:
    """`count` leads by COPY; seconds taken. Names and companies drawn like the wrk bodies', from
    a wider set: 20,000 companies (Zipf-like: a few large customers, a long tail) and the name lists."""
    rng = random.Random(1)
    many = companies(500) + [
        (rng.choice(STEMS_ZH) + rng.choice(TRADES_ZH) + str(i) + rng.choice(FORMS_ZH))
        if i % 2
        else f"{rng.choice(STEMS_LATIN)} {rng.choice(TRADES_LATIN)} {i} {rng.choice(FORMS_LATIN)}"
        for i in range(19_500)
    ]
    weights = [1 / (k + 1) ** 0.8 for k in range(len(many))]
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    now = datetime.now(UTC)
    statuses = ["new", "working", "qualified", "unqualified", "converted"]
    columns = [
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
        "name",
        "company",
        "email",
        "phone",
        "created_at",
        "updated_at",
        "version",
    ]
    try:
        done = 0
        while done < count:
            n = min(COPY_CHUNK, count - done)
            picked = rng.choices(many, weights=weights, k=n)
            rows = []
            for i in range(n):
                k = done + i
                # A day to three years old: older than the unassigned-lead sweep's window (6 h),
                # which would otherwise take these pooled, never-decided leads for lost jobs and
                # assign them (with every newer lead of the organisation) during the measurement.
                created = now - timedelta(seconds=rng.uniform(86400, 3 * 365 * 86400))
                rows.append(
                    (
                        uuid.uuid4(),
                        org_id,
                        rng.choice(statuses),
                        "web_form",
                        "{}",
                        "{}",
                        "[]",
                        0,
                        "[]",
                        True,
                        1,
                        person(rng),
                        picked[i],
                        f"old{k}@loaded.example",
                        f"+86134{k:08d}" if rng.random() < 0.7 else None,
                        created,
                        created,
                        1,
                    )
                )
            await conn.copy_records_to_table("leads", records=rows, columns=columns)
            done += n
        # As a restore would: vacuum and analyse now, so autovacuum does not work through the
        # million fresh rows (and their trigger-kept lead facts) during the measured rounds.
        await conn.execute("VACUUM (ANALYZE) leads")
        await conn.execute("VACUUM (ANALYZE) lead_funnel_facts")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def sessions(conn: asyncpg.Connection) -> int:
    """Connections ever opened to the current database (PostgreSQL 14+)."""
    return int(
        await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    )


async def main() -> None:
    """Set up, measure both servers, print the table, clean up."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--leads", type=int, default=1_000_000, help="leads in the loaded organisation (0: skip it)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per round")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bodies", default="min,full", help="min, full, and merge (repeat posts of 2,000 addresses)"
    )
    parser.add_argument(
        "--assign-at",
        type=float,
        default=0.0,
        help="also measure accepted -> assigned at this fraction of the full-form rate",
    )
    parser.add_argument("--assign-seconds", type=float, default=60.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    with bench_servers() as (admin_dsn, redis_url):
        await measure(args, admin_dsn, redis_url)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def measure(args: argparse.Namespace, admin_dsn: str, redis_url: str) -> None:
    """Both servers on a fresh database of the server at `admin_dsn`; the table."""
    db_name = f"loudou_bench_{uuid.uuid4().hex[:8]}"
    dsn = database_dsn(admin_dsn, db_name)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{db_name}"')
    await conn.close()
    workdir = Path(tempfile.mkdtemp(prefix="loudou-bench-"))
    lua = workdir / "intake_wrk.lua"
    print(f"logs in {workdir}")
    write_lua(lua)
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
    try:
        run([str(BIN / "loudou"), "migrate"], env)
        orgs: dict[str, dict[str, Any]] = {}
        for label in ("empty", "loaded") if args.leads else ("empty",):
            orgs[label] = json.loads(
                run(
                    [
                        str(BIN / "loudou"),
                        "org",
                        "create",
                        f"Bench {label}",
                        "--admin-email",
                        f"bench-{label}@example.com",
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
        if args.leads:
            took = await load_leads(dsn, uuid.UUID(orgs["loaded"]["org_id"]), args.leads)
            print(f"loaded {args.leads:,} leads by COPY in {took:.0f} s")
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
            server(loudou_cmd, env, port, workdir / "loudou.log") as lp,
            server(raw_cmd, env, raw_port, workdir / "raw.log") as rp,
        ):
            urls: dict[str, str] = {}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                for label, org in orgs.items():
                    r = await c.post(
                        "/v1/intake-sources",
                        json={"kind": "form", "name": "Bench form", "rate_limit_per_minute": 0},
                        headers={"Authorization": f"Bearer {org['api_key']}"},
                    )
                    r.raise_for_status()
                    urls[label] = f"http://127.0.0.1:{port}{r.json()['endpoint']}"
            raw_url = f"http://127.0.0.1:{raw_port}/intake"
            org_ids = {label: uuid.UUID(org["org_id"]) for label, org in orgs.items()}
            table = await rounds(args, lua, dsn, urls, org_ids, raw_url, {"loudou": lp.pid, "raw": rp.pid})
            print_table(args, table)
            if args.assign_at:
                full = [row for row in table if row["server"] == "loudou" and row["body"] == "full"]
                rate = min(row["rps"] for row in full)
                await assignment(
                    args, lua, dsn, env, orgs["empty"], urls["empty"], rate * args.assign_at, workdir, lp.pid
                )
    finally:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await conn.close()


async def _stored(monitor: asyncpg.Connection, name: str, org_id: uuid.UUID) -> int:
    """Rows the server `name` has stored so far: the organisation's leads, or the raw table's."""
    if name == "loudou":
        return int(await monitor.fetchval("SELECT count(*) FROM leads WHERE org_id = $1", org_id))
    return int(await monitor.fetchval("SELECT count(*) FROM bench_raw"))


async def rounds(
    args: argparse.Namespace,
    lua: Path,
    dsn: str,
    urls: dict[str, str],
    org_ids: dict[str, uuid.UUID],
    raw_url: str,
    groups: dict[str, int],
) -> list[dict[str, Any]]:
    """For each body, rounds that alternate the organisations and, within each, loudou and raw;
    one row per combination. The organisations take turns round by round (not one after the
    other), so a drift of the machine or a table growing during the run weighs on both alike."""
    monitor = await asyncpg.connect(dsn)
    table: list[dict[str, Any]] = []
    labels = list(urls)
    try:
        for body in args.bodies.split(","):
            for label in labels:
                for target in (urls[label], raw_url):  # warm caches, pools and connections
                    wrk(lua, target, body=body, seconds=3, conns=args.conns, threads=args.threads)
            res: dict[str, dict[str, list[dict[str, Any]]]] = {
                label: {"loudou": [], "raw": []} for label in labels
            }
            stored = {label: {"loudou": 0, "raw": 0} for label in labels}
            new_conns = {label: {"loudou": 0, "raw": 0} for label in labels}
            cpu = {
                label: {name: {"server": 0.0, "postgres": 0.0} for name in ("loudou", "raw")}
                for label in labels
            }
            # backends alive at a round's end that began in it
            young = {label: {"loudou": 0, "raw": 0} for label in labels}
            loads: dict[str, list[float]] = {label: [] for label in labels}
            with PeakRss(groups) as rss:
                for i in range(args.rounds):
                    for label in labels if i % 2 == 0 else labels[::-1]:
                        order = [("loudou", urls[label]), ("raw", raw_url)]
                        if i % 2:
                            order.reverse()
                        for name, target in order:
                            rows_before = await _stored(monitor, name, org_ids[label])
                            opened = await sessions(monitor)
                            since = await monitor.fetchval("SELECT clock_timestamp()")
                            cpu_before = cpu_seconds(groups)
                            res[label][name].append(
                                wrk(
                                    lua,
                                    target,
                                    body=body,
                                    seconds=args.seconds,
                                    conns=args.conns,
                                    threads=args.threads,
                                )
                            )
                            cpu_after = cpu_seconds(groups)
                            cpu[label][name]["server"] += cpu_after[name] - cpu_before[name]
                            cpu[label][name]["postgres"] += cpu_after["postgres"] - cpu_before["postgres"]
                            new_conns[label][name] += await sessions(monitor) - opened
                            young[label][name] += await monitor.fetchval(
                                "SELECT count(*) FROM pg_stat_activity"
                                " WHERE datname = current_database() AND backend_start >= $1",
                                since,
                            )
                            loads[label].append(os.getloadavg()[0])
                            stored[label][name] += await _stored(monitor, name, org_ids[label]) - rows_before
            for label in labels:
                for name in ("loudou", "raw"):
                    runs = res[label][name]
                    requests = sum(r["requests"] for r in runs)
                    table.append(
                        {
                            "server": name,
                            "body": body,
                            "org": label,
                            "rps": statistics.median(r["rps"] for r in runs),
                            "p50": statistics.median(r["p50_ms"] for r in runs),
                            "p99": statistics.median(r["p99_ms"] for r in runs),
                            "non2xx": sum(r["err_status"] for r in runs),
                            "errors": sum(
                                r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
                                for r in runs
                            ),
                            "requests": requests,
                            "stored": stored[label][name],
                            "rss": rss.peak[name],
                            # connections opened to the database during the measured rounds
                            "new_conns": new_conns[label][name],
                            "young": young[label][name],
                            "wrk_cpu_ms": 1000 * sum(r["cpu_s"] for r in runs) / max(requests, 1),
                            # CPU a request: the server's processes, and PostgreSQL's (all of it)
                            "server_cpu_ms": 1000 * cpu[label][name]["server"] / max(requests, 1),
                            "pg_cpu_ms": 1000 * cpu[label][name]["postgres"] / max(requests, 1),
                            "wrk_cpu_pct": 100
                            * sum(r["cpu_s"] for r in runs)
                            / sum(r["duration_s"] for r in runs),
                            "load": statistics.mean(loads[label]),
                        }
                    )
    finally:
        await monitor.close()
    return table


def print_table(args: argparse.Namespace, table: list[dict[str, Any]]) -> None:
    print(
        f"\nwrk -t{args.threads} -c{args.conns}, {args.rounds} alternating rounds of {args.seconds:.0f} s "
        "per row, "
        f"uvicorn 2 workers each, {os.cpu_count()} CPUs, loaded organisation: {args.leads:,} leads; "
        f"load average now {loadavg()}"
    )
    print(
        f"{'server':<7}{'body':<6}{'org':<7}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'non2xx':>7}{'errors':>7}"
        f"{'requests':>9}{'stored':>8}{'ratio':>6}{'RSS MB':>7}{'new conn':>9}{'young':>6}{'wrk ms/req':>11}"
        f"{'wrk %CPU':>9}{'srv ms/req':>11}{'pg ms/req':>10}{'load1':>6}"
    )
    raw = {(r["body"], r["org"]): r["rps"] for r in table if r["server"] == "raw"}
    for r in table:
        print(
            f"{r['server']:<7}{r['body']:<6}{r['org']:<7}{r['rps']:>7.0f}{r['p50']:>8.1f}{r['p99']:>8.1f}"
            f"{r['non2xx']:>7}{r['errors']:>7}{r['requests']:>9}{r['stored']:>8}"
            f"{r['rps'] / raw[(r['body'], r['org'])]:>6.2f}{r['rss']:>7.0f}{r['new_conns']:>9}{r['young']:>6}"
            f"{r['wrk_cpu_ms']:>11.3f}{r['wrk_cpu_pct']:>9.1f}{r['server_cpu_ms']:>11.3f}{r['pg_cpu_ms']:>10.3f}"
            f"{r['load']:>6.2f}"
        )
    loudou = {(r["body"], r["org"]): r["rps"] for r in table if r["server"] == "loudou"}
    for body in args.bodies.split(","):
        if (body, "loaded") in loudou:
            print(
                f"{body}: loaded / empty organisation req/s = "
                f"{loudou[(body, 'loaded')] / loudou[(body, 'empty')]:.2f}"
            )


async def assignment(
    args: argparse.Namespace,
    lua: Path,
    dsn: str,
    env: dict[str, str],
    org: dict[str, Any],
    url: str,
    rate: float,
    workdir: Path,
    api_pgid: int,
) -> None:
    """Accepted -> assigned at `rate` leads/s for `--assign-seconds`, two workers, round robin over
    three reps in a fresh organisation; latency from the lead's and the decision's created_at."""
    auth = {"Authorization": f"Bearer {org['api_key']}"}
    base = url.split("/v1/")[0]
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post(
            "/v1/intake-sources",
            json={"kind": "form", "name": "Assign form", "rate_limit_per_minute": 0},
            headers=auth,
        )
        r.raise_for_status()
        form = f"{base}{r.json()['endpoint']}"
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
        rule_id = r.json()["id"]
    db = await asyncpg.connect(dsn)
    # The intake rounds left their lead.created events undispatched (no worker ran): mark them
    # sent, so the workers start on this measurement's leads only.
    await db.execute("UPDATE outbox SET dispatched_at = now() WHERE dispatched_at IS NULL")
    worker_env = {**env, "LOUDOU_QUEUE_NAME": f"loudou-bench:{uuid.uuid4().hex[:6]}"}
    org_id = uuid.UUID(org["org_id"])
    # As many connections as the capacity rounds: each pausing between posts, together they can
    # reach the asked rate even when an answer takes a capacity round's time (32 capped a closed
    # loop at about 800 posts a second here whatever the server did).
    conns = args.conns
    with (
        background([str(BIN / "loudou"), "worker"], worker_env, workdir / "worker0.log") as w0,
        background([str(BIN / "loudou"), "worker"], worker_env, workdir / "worker1.log") as w1,
    ):
        await asyncio.sleep(3)  # both workers up
        # Warm both workers (imports, connections, the relay) as the intake rounds warm the servers:
        # a few leads, each assigned, before the measured load.
        warm_from = datetime.now(UTC)
        async with httpx.AsyncClient(timeout=30) as c:
            for i in range(12):
                r = await c.post(form, json={"email": f"warm{i}-{uuid.uuid4().hex[:6]}@example.com"})
                r.raise_for_status()
                await asyncio.sleep(0.1)
        for _ in range(120):
            waiting = await db.fetchval(
                "SELECT count(*) FROM leads l WHERE l.org_id = $1 AND l.created_at >= $2 AND NOT EXISTS"
                " (SELECT 1 FROM assignment_decisions d WHERE d.org_id = l.org_id AND d.lead_id = l.id)",
                org_id,
                warm_from,
            )
            if waiting == 0:
                break
            await asyncio.sleep(0.5)
        # `conns` connections, each pausing after each answer so that together they post about
        # `rate` a second: the pause is calibrated by two short runs (an answer's own time counts).
        pause_ms = max(0, int(1000 * conns / rate) - 15)
        for _ in range(2):
            probe = await asyncio.to_thread(
                wrk, lua, form, body="full", seconds=4, conns=conns, threads=args.threads, pause_ms=pause_ms
            )
            answer_ms = max(0.0, 1000 * conns / max(probe["rps"], 1.0) - pause_ms)
            pause_ms = max(0, int(1000 * conns / rate - answer_ms))
        await asyncio.sleep(3)  # let the calibration's leads be assigned before the clock starts
        started = datetime.now(UTC)
        depth: list[int] = []

        watcher = await asyncpg.connect(dsn)

        async def sample() -> None:
            while True:
                depth.append(
                    int(
                        await watcher.fetchval(
                            "SELECT count(*) FROM leads l WHERE l.org_id = $1 AND l.created_at >= $2"
                            " AND NOT EXISTS (SELECT 1 FROM assignment_decisions d"
                            " WHERE d.org_id = l.org_id AND d.lead_id = l.id)",
                            org_id,
                            started,
                        )
                    )
                )
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        groups = {"api": api_pgid, "workers": w0.pid, "workers1": w1.pid}
        cpu_before = cpu_seconds(groups)
        result = await asyncio.to_thread(
            wrk,
            lua,
            form,
            body="full",
            seconds=args.assign_seconds,
            conns=conns,
            threads=args.threads,
            pause_ms=pause_ms,
        )
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await watcher.close()
        posted_until = time.monotonic()
        while time.monotonic() - posted_until < 120:
            left = await db.fetchval(
                "SELECT count(*) FROM leads l WHERE l.org_id = $1 AND l.created_at >= $2 AND NOT EXISTS"
                " (SELECT 1 FROM assignment_decisions d WHERE d.org_id = l.org_id AND d.lead_id = l.id)",
                org_id,
                started,
            )
            if left == 0:
                break
            await asyncio.sleep(0.5)
        drain_s = time.monotonic() - posted_until
        cpu_after = cpu_seconds(groups)
    rows = await db.fetch(
        "SELECT l.id, l.owner_id, extract(epoch FROM d.created_at - l.created_at) AS seconds,"
        " count(*) OVER (PARTITION BY l.id) AS decisions FROM leads l"
        " JOIN assignment_decisions d ON d.org_id = l.org_id AND d.lead_id = l.id"
        " WHERE l.org_id = $1 AND l.created_at >= $2",
        org_id,
        started,
    )
    leads = await db.fetchval(
        "SELECT count(*) FROM leads WHERE org_id = $1 AND created_at >= $2", org_id, started
    )
    per_rep = await db.fetch(
        "SELECT chosen_user_id, count(*) FROM assignment_decisions WHERE org_id = $1 AND rule_id = $2"
        " GROUP BY 1",
        org_id,
        uuid.UUID(rule_id),
    )
    await db.close()
    seconds = sorted(float(r["seconds"]) for r in rows)

    def pct(p: float) -> float:
        return 1000 * seconds[min(len(seconds) - 1, int(len(seconds) * p))] if seconds else float("nan")

    counts = sorted(int(r["count"]) for r in per_rep)
    span = (datetime.now(UTC) - started).total_seconds()
    print(
        f"\naccepted -> assigned: wrk -c{conns} paced to {rate:.0f}/s (pause {pause_ms} ms) "
        f"({args.assign_at:.0%} of the full-form rate) "
        f"for {args.assign_seconds:.0f} s, 2 workers, round robin over 3 reps; load average now {loadavg()}"
    )
    print(
        f"{'posted/s':>9}{'leads':>7}{'decided':>8}{'max dec/lead':>13}{'per rep':>18}{'max-min':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'drain s':>8}  queue depth every 5 s"
    )
    print(
        f"{result['rps']:>9.0f}{leads:>7}{len(rows):>8}{max((r['decisions'] for r in rows), default=0):>13}"
        f"{counts!s:>18}{(counts[-1] - counts[0]) if counts else 0:>8}{pct(0.5):>8.0f}{pct(0.99):>8.0f}"
        f"{1000 * seconds[-1] if seconds else float('nan'):>8.0f}{drain_s:>8.1f}  {depth}"
    )
    print(f"(assignment throughput over the run: {len(rows) / span:.0f} leads/s)")
    used = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    used["workers"] += used.pop("workers1")
    print(
        "CPU ms a lead over the load and the drain (posting and assigning): "
        + ", ".join(
            f"{name} {1000 * seconds_used / max(leads, 1):.2f}" for name, seconds_used in used.items()
        )
        + f", wrk {1000 * result['cpu_s'] / max(leads, 1):.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
