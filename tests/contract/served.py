"""A served Loudou for contract runs: a fresh migrated database, `loudou serve` on a free loopback
port (rate limits off), two organisations, and an API key of each role in the first.

Used by the schemathesis run (`python -m tests.contract.run_schemathesis`) and by the generated-client
test. Reads DATABASE_URL and REDIS_URL (the machine's servers, as in CI); the database named in
DATABASE_URL is only used to create and drop a database of its own. Unset, it starts the embedded
servers under a temporary LOUDOU_HOME."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
import redis as redis_client
from sqlalchemy.engine import make_url

from app.config import normalise_database_url

ROOT = Path(__file__).resolve().parents[2]
LOUDOU = str(Path(sys.executable).parent / "loudou")
ROLES = ("admin", "manager", "rep", "viewer")


@dataclass
class Served:
    """Where the app listens and the keys to call it with."""

    base_url: str
    org_id: str
    keys: dict[str, str]  # role -> API key (all scopes)
    other_org_key: str
    env: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str = "admin") -> dict[str, str]:
        """Headers for one role's key."""
        return {"Authorization": f"Bearer {self.keys[role]}"}


def free_port() -> int:
    """A port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(_asyncpg_url(url), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def _database(server_url: str) -> Iterator[str]:
    name = f"loudou_contract_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([LOUDOU, *args], env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loudou {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def _org(env: dict[str, str], name: str) -> dict[str, Any]:
    out = _run(
        env, "org", "create", name, "--admin-email", f"admin-{uuid.uuid4().hex[:6]}@example.com", "--json"
    )
    created: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return created


def _key_for(client: httpx.Client, admin_key: str, role: str) -> str:
    headers = {"Authorization": f"Bearer {admin_key}"}
    r = client.post(
        "/v1/users",
        json={"email": f"{role}-{uuid.uuid4().hex[:6]}@example.com", "role": role},
        headers=headers,
    )
    r.raise_for_status()
    r = client.post("/v1/api-keys", json={"name": f"{role} key", "user_id": r.json()["id"]}, headers=headers)
    r.raise_for_status()
    key: str = r.json()["key"]
    return key


CONTRACT_REDIS_DB = 15


def _redis_database(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(db))]
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def _forget_limits(url: str) -> None:
    """Drop the login guard's and rate limiter's counters of the contract runs' database."""
    client = redis_client.Redis.from_url(url)
    try:
        for pattern in ("loudou:login:*", "loudou:rl:*"):
            for key in client.scan_iter(match=pattern, count=500):
                client.delete(key)
    finally:
        client.close()


@contextmanager
def served(*, log_path: Path | None = None) -> Iterator[Served]:
    """Migrate a fresh database, seed the organisations and keys, serve; stop and drop after."""
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loudou-contract-")))
        db = os.environ.get("DATABASE_URL")
        redis = os.environ.get("REDIS_URL")
        if not db or not redis:
            from app import embedded

            handle = embedded.start(home, database=not db, redis=not redis)
            stack.callback(handle.stop)
            db = db or handle.database_url
            redis = redis or handle.redis_url
        assert db is not None and redis is not None
        url = stack.enter_context(_database(normalise_database_url(db)))
        # A Redis database of its own: the fuzzed logins lock out 127.0.0.1 in the login guard,
        # which must not reach tests running on the same server (they use database 0).
        redis = _redis_database(redis, CONTRACT_REDIS_DB)
        _forget_limits(redis)
        stack.callback(_forget_limits, redis)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis,
            "LOUDOU_HOME": str(home),
            "LOUDOU_SECRET_KEY": "contract-secret-" + "x" * 32,
            "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
            "LOUDOU_QUEUE_NAME": f"loudou-contract:{uuid.uuid4().hex[:8]}",
            "LOUDOU_ACCESS_LOG": "false",
            "LOUDOU_LOG_LEVEL": "WARNING",
        }
        _run(env, "migrate")
        first = _org(env, "Contract")
        second = _org(env, "Other")
        port = free_port()
        log = stack.enter_context(open(log_path or home / "serve.log", "w"))
        proc = subprocess.Popen(
            [LOUDOU, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log
        )

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        stack.callback(stop)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"loudou serve exited with {proc.returncode}")
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("loudou serve did not become ready in 60 s")
                time.sleep(0.2)
            keys = {"admin": first["api_key"]}
            for role in ROLES[1:]:
                keys[role] = _key_for(client, first["api_key"], role)
        yield Served(
            base_url=base, org_id=first["org_id"], keys=keys, other_org_key=second["api_key"], env=env
        )
