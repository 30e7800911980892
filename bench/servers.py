"""Where a benchmark finds PostgreSQL and Redis: DATABASE_URL / REDIS_URL when set, else the
local servers at 127.0.0.1 when they answer, else embedded ones (the `embedded` extra) started
under a temporary directory and stopped on the way out."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LOCAL_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def bench_servers() -> Iterator[tuple[str, str]]:
    """(an asyncpg DSN of the server's `postgres` database, a Redis URL)."""
    database = os.environ.get("DATABASE_URL") or (LOCAL_DATABASE if _answers(5432) else None)
    redis = os.environ.get("REDIS_URL") or (LOCAL_REDIS if _answers(6379) else None)
    servers = None
    if database is None or redis is None:
        from app import embedded

        home = Path(tempfile.mkdtemp(prefix="loudou-bench-servers-"))
        servers = embedded.start(home, database=database is None, redis=redis is None)
        database = database or servers.database_url
        redis = redis or servers.redis_url
        print(f"using embedded servers under {home}")
    assert database is not None and redis is not None
    try:
        yield database.replace("postgresql+asyncpg://", "postgresql://"), redis
    finally:
        if servers is not None:
            servers.stop()


def database_dsn(server_dsn: str, name: str) -> str:
    """The same server's DSN for database `name` (host, port or socket query kept)."""
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))
