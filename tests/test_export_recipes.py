"""The README's BI recipes, run with the real libraries against a served app (`loudou serve` on a
free loopback port): DuckDB and Polars over export pages, and a dlt rest_api pipeline with the
incremental cursor loading into DuckDB. Each recomputes the deals per stage (count and amount per
currency) and compares it with the API's own pipeline board."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import polars as pl
import pytest

from app.config import Settings
from app.state import AppState
from tests.conftest import Org, Servers, make_org
from tests.factories import make_deal, stages

CURSOR = "Loudou-Next-Cursor"


@pytest.fixture(scope="module")
def served(servers: Servers, settings: Settings) -> Iterator[str]:
    """`loudou serve` on a free loopback port, on the test session's database."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": servers.redis_url,
        "LOUDOU_SECRET_KEY": settings.resolved_secret_key(),
        "LOUDOU_HOME": str(servers.home),
        "LOUDOU_ACCESS_LOG": "false",
        "LOUDOU_LOG_LEVEL": "WARNING",
        "LOUDOU_RATE_LIMIT_PER_MINUTE": "0",
    }
    loudou = Path(sys.executable).parent / "loudou"
    proc = subprocess.Popen([str(loudou), "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "loudou serve exited"
            assert time.monotonic() < deadline, "loudou serve did not start"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
async def bi_org(state: AppState, client: httpx.AsyncClient) -> tuple[Org, str]:
    """An organisation with deals at every open stage, won and lost ones, and a BI key (shared by the
    module's tests: each compares with the board as it is when it starts)."""
    org = await make_org(state, client)
    ids = await stages(org)
    open_stages = [k for k in ids if k not in ("_pipeline", "won", "lost")]
    for i, key in enumerate(open_stages * 2):
        currency = "CNY" if i % 2 else "USD"
        await make_deal(
            org,
            stage_id=ids[key],
            amount=f"{1000 + i}.{i:02d}",
            currency=currency,
            expected_close_date="2027-03-31",
        )
    contact = (await org.client.post("/v1/contacts", json={"name": "Ada"}, headers=org.auth())).json()
    for outcome in ("won", "lost"):
        deal = await make_deal(
            org, amount="5.00", currency="CNY", contact_id=contact["id"], expected_close_date="2027-03-31"
        )
        body = {"reason": "price"} if outcome == "lost" else None
        r = await org.client.post(f"/v1/deals/{deal['id']}/{outcome}", json=body, headers=org.auth())
        assert r.status_code == 200, r.text
    r = await org.client.post(
        "/v1/api-keys", json={"name": "bi", "scopes": ["export:read", "read"]}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    return org, r.json()["key"]


async def board(org: Org) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """The API's numbers: deals per (stage, currency) on the pipeline board: count and amount."""
    ids = await stages(org)
    r = await org.client.get(f"/v1/pipelines/{ids['_pipeline']}/board", headers=org.auth())
    assert r.status_code == 200, r.text
    return {
        (col["stage"]["id"], t["currency"]): (t["count"], Decimal(t["amount"]))
        for col in r.json()["columns"]
        for t in col["totals"]
    }


# The pipeline board's numbers, from the exported rows: deals per current stage and currency.
PER_STAGE = """
    SELECT stage_id::VARCHAR AS stage_id, currency, count(*) AS deals, sum(CAST(amount AS DECIMAL(18, 4))) AS amount
    FROM deals WHERE deleted_at IS NULL GROUP BY ALL
"""


def as_numbers(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], tuple[int, Decimal]]:
    return {(str(s), c): (int(n), Decimal(a)) for s, c, n, a in rows}


def download(base: str, key: str, entity: str, fmt: str, folder: Path, limit: int = 7) -> list[Path]:
    """The README recipe: save every page of an entity until an empty page; keep the cursor."""
    files: list[Path] = []
    cursor: str | None = None
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            params: dict[str, Any] = {"format": fmt, "limit": limit} | ({"cursor": cursor} if cursor else {})
            r = http.get(f"/v1/export/{entity}", params=params)
            r.raise_for_status()
            if r.headers.get("Loudou-Has-More") == "false" and cursor == r.headers[CURSOR]:
                break  # an empty page: caught up
            path = folder / f"{entity}-{len(files):05d}.{fmt}"
            path.write_bytes(r.content)
            files.append(path)
            cursor = r.headers[CURSOR]
            if r.headers["Loudou-Has-More"] == "false":
                break
    (folder / f"{entity}.cursor").write_text(cursor or "")
    return files


async def wait_until_exported(org: Org, key: str, count: int, cursor: str | None = None) -> None:
    """The export hands out rows once their transactions are below the horizon (at once, unless
    a writing transaction in this database is still open)."""
    params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
    for _ in range(150):
        r = await org.client.get("/v1/export/deals", params=params, headers=org.auth(key))
        if len(r.content.splitlines()) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"deals were not exported in time: {len(r.content.splitlines())} of {count}: {r.text[:300]}"
    )


async def test_duckdb_reads_parquet_and_ndjson_pages(
    served: str, bi_org: tuple[Org, str], tmp_path: Path
) -> None:
    org, key = bi_org
    expected = await board(org)
    total = sum(n for n, _ in expected.values())
    await wait_until_exported(org, key, total)

    parquet = download(served, key, "deals", "parquet", tmp_path)
    assert len(parquet) > 1  # several pages
    con = duckdb.connect()
    con.execute(f"CREATE TABLE deals AS SELECT * FROM read_parquet('{tmp_path}/deals-*.parquet')")
    assert con.execute("SELECT count(*) FROM deals").fetchone() == (total,)
    amount_type = con.execute("SELECT typeof(amount) FROM deals LIMIT 1").fetchone()
    assert amount_type is not None
    assert str(amount_type[0]) == "DECIMAL(18,4)"
    assert as_numbers(con.execute(PER_STAGE).fetchall()) == expected

    json_dir = tmp_path / "json"
    json_dir.mkdir()
    download(served, key, "deals", "ndjson", json_dir)
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE deals AS SELECT * FROM read_json('{json_dir}/deals-*.ndjson', format='newline_delimited')"
    )
    assert con.execute("SELECT count(*) FROM deals").fetchone() == (total,)
    assert as_numbers(con.execute(PER_STAGE).fetchall()) == expected


async def test_polars_scans_ndjson_and_reads_parquet(
    served: str, bi_org: tuple[Org, str], tmp_path: Path
) -> None:
    org, key = bi_org
    expected = await board(org)
    total = sum(n for n, _ in expected.values())
    await wait_until_exported(org, key, total)

    files = download(served, key, "deals", "ndjson", tmp_path)
    # NDJSON pages append into one file (Polars infers one schema per scan from the first file).
    combined = tmp_path / "deals.ndjson"
    combined.write_bytes(b"".join(f.read_bytes() for f in files))
    lazy = pl.scan_ndjson(combined, infer_schema_length=None)
    deals = lazy.with_columns(pl.col("amount").cast(pl.Decimal(18, 4))).collect()
    assert deals.height == total
    per_stage = (
        deals.filter(pl.col("deleted_at").is_null())
        .group_by("stage_id", "currency")
        .agg(pl.len().alias("deals"), pl.col("amount").sum())
    )
    assert as_numbers(per_stage.rows()) == expected

    parquet = download(served, key, "deals", "parquet", tmp_path, limit=1000)
    frame = pl.read_parquet(parquet[0])
    assert frame.height == total and frame.schema["amount"] == pl.Decimal(18, 4)
    assert frame.schema["updated_at"] == pl.Datetime("us", "UTC")


async def test_dlt_rest_api_loads_incrementally_into_duckdb(
    served: str, bi_org: tuple[Org, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt
    from dlt.sources.rest_api import rest_api_source

    org, key = bi_org
    expected = await board(org)
    total = sum(n for n, _ in expected.values())
    await wait_until_exported(org, key, total)

    def source() -> Any:
        return rest_api_source(
            {
                "client": {
                    "base_url": f"{served}/v1/",
                    "auth": {"type": "bearer", "token": key},
                    "paginator": {
                        "type": "cursor",
                        "cursor_path": "next_cursor",
                        "cursor_param": "cursor",
                        "stop_after_empty_page": True,
                    },
                },
                "resource_defaults": {
                    "primary_key": "id",
                    "write_disposition": "merge",
                    "endpoint": {"data_selector": "data", "params": {"format": "json", "limit": 5}},
                    "columns": {
                        "deleted_at": {"hard_delete": True},
                        "amount": {"data_type": "decimal", "precision": 18, "scale": 4},
                    },
                },
                "resources": [
                    {
                        "name": "deals",
                        "endpoint": {
                            "path": "export/deals",
                            "incremental": {
                                "start_param": "cursor",
                                "cursor_path": "export_cursor",
                                "initial_value": "0" * 36,
                            },
                        },
                    }
                ],
            },
            name="loudou",
            max_table_nesting=0,
        )

    database = tmp_path / "bi.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="loudou",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="loudou",
        pipelines_dir=str(tmp_path / "dlt"),
    )

    def loaded() -> tuple[int, dict[tuple[str, str], tuple[int, Decimal]]]:
        with duckdb.connect(str(database)) as con:
            con.execute("SET schema = 'loudou'")
            count = con.execute("SELECT count(*) FROM deals").fetchone()
            assert count is not None
            return int(count[0]), as_numbers(
                con.execute(PER_STAGE.replace("WHERE deleted_at IS NULL", "")).fetchall()
            )

    pipeline.run(source())
    assert loaded() == (total, expected)
    incremental = pipeline.state["sources"]["loudou"]["resources"]["deals"]["incremental"]["export_cursor"]
    first_cursor = incremental["last_value"]
    assert len(first_cursor) == 36  # the export_cursor of the last row loaded

    # Changes after the first load: one deal is lost, one is deleted, one is new.
    deals = (
        await org.client.get("/v1/deals", params={"status": "open", "limit": 200}, headers=org.auth())
    ).json()["data"]
    ids = await stages(org)
    moved, deleted = deals[0], deals[1]
    r = await org.client.post(f"/v1/deals/{moved['id']}/lost", json={"reason": "price"}, headers=org.auth())
    assert r.status_code == 200, r.text
    assert (await org.client.delete(f"/v1/deals/{deleted['id']}", headers=org.auth())).status_code == 200
    await make_deal(org, stage_id=ids["prospect"], amount="77.70", currency="CNY")
    await wait_until_exported(org, key, 3, cursor=first_cursor)  # moved, deleted (a tombstone), new

    info = pipeline.run(source())
    assert not info.has_failed_jobs
    assert loaded() == (total, await board(org))
    incremental = pipeline.state["sources"]["loudou"]["resources"]["deals"]["incremental"]["export_cursor"]
    assert incremental["last_value"] > first_cursor


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_recipes() -> dict[str, str]:
    """The README's Python blocks that start with `# recipe: <name>`."""
    found = re.findall(r"```python\n# recipe: (\w+)\n(.*?)```", README.read_text(), flags=re.S)
    return dict(found)


async def test_the_readme_recipes_run_as_written(
    served: str, bi_org: tuple[Org, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, key = bi_org
    expected = await board(org)
    await wait_until_exported(org, key, sum(n for n, _ in expected.values()))
    recipes = readme_recipes()
    assert set(recipes) == {"download", "duckdb", "polars", "dlt"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOUDOU_API", served)
    monkeypatch.setenv("LOUDOU_KEY", key)
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")

    exec(recipes["download"], {})  # noqa: S102 (the README's own code)
    duck: dict[str, Any] = {}
    exec(recipes["duckdb"], duck)  # noqa: S102
    assert as_numbers(duck["per_stage"].fetchall()) == expected
    polars_ns: dict[str, Any] = {}
    exec(recipes["polars"], polars_ns)  # noqa: S102
    assert as_numbers(polars_ns["polars_per_stage"].rows()) == expected
    exec(recipes["dlt"], {})  # noqa: S102
    with duckdb.connect("loudou_bi.duckdb") as con:
        loaded = con.execute(
            PER_STAGE.replace("FROM deals WHERE deleted_at IS NULL", "FROM loudou.deals")
        ).fetchall()
    assert as_numbers(loaded) == expected

    # Again after a change: the download resumes from its saved cursor; dlt from its state.
    deal = await make_deal(org, amount="12.34", currency="CNY")
    await wait_until_exported(org, key, 1, cursor=(tmp_path / "export" / "deals.parquet.cursor").read_text())
    exec(recipes["download"], {})  # noqa: S102
    duck = {}
    exec(recipes["duckdb"], duck)  # noqa: S102
    after = await board(org)
    assert as_numbers(duck["per_stage"].fetchall()) == after != expected
    exec(recipes["dlt"], {})  # noqa: S102
    with duckdb.connect("loudou_bi.duckdb") as con:
        assert con.execute("SELECT count(*) FROM loudou.deals WHERE id = ?", [deal["id"]]).fetchone() == (1,)
