"""Helpers for the export tests: pulling pages, applying them as a BI copy would, raw connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tests.conftest import Org

CURSOR = "Loudou-Next-Cursor"


@dataclass
class Pulled:
    """What a sequence of pulls brought: every row in order, and the cursor to resume from."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None
    pages: int = 0


def ndjson(body: bytes) -> list[dict[str, Any]]:
    """The objects of an NDJSON body."""
    return [json.loads(line) for line in body.decode().splitlines() if line]


async def pull(
    org: Org,
    entity: str,
    *,
    key: str | None = None,
    cursor: str | None = None,
    limit: int = 1000,
    **params: Any,
) -> Pulled:
    """Pull NDJSON pages from `cursor` until an empty page; every page must carry the cursor header."""
    out = Pulled(cursor=cursor)
    while True:
        query: dict[str, Any] = {"format": "ndjson", "limit": limit, **params}
        if out.cursor:
            query["cursor"] = out.cursor
        r = await org.client.get(f"/v1/export/{entity}", params=query, headers=org.auth(key))
        assert r.status_code == 200, r.text
        assert r.headers[CURSOR], "every page carries the cursor"
        rows = ndjson(r.content)
        out.pages += 1
        out.cursor = r.headers[CURSOR]
        if not rows:
            assert r.headers["Loudou-Has-More"] == "false"
            return out
        assert rows[-1]["export_cursor"] == out.cursor
        out.rows += rows


def apply(copy: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Upsert rows by id and apply tombstones, as a BI copy does."""
    for row in rows:
        if row.get("deleted_at"):
            copy.pop(row["id"], None)
        else:
            copy[row["id"]] = row
    return copy


async def pull_until(
    org: Org,
    entity: str,
    check: Any,
    *,
    cursor: str | None = None,
    key: str | None = None,
    timeout: float = 15.0,
) -> Pulled:
    """Pull again and again from `cursor` until `check(all rows so far)` holds. A writing transaction
    anywhere on the server holds the export's horizon back until it ends (by design), and other
    test sessions share the server, so a test waits for its rows instead of expecting them at once."""
    total = Pulled(cursor=cursor)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await pull(org, entity, key=key, cursor=total.cursor)
        total.rows += got.rows
        total.cursor = got.cursor
        total.pages += got.pages
        if check(total.rows):
            return total
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"export of {entity} never satisfied the check; got {len(total.rows)} rows")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def raw_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test database, for transactions the API would not hold open."""
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()
