"""(c) PostgreSQL restarted under load: while it is down the API answers 503 problem+json within
its timeout (never hangs); it recovers without a restart; no accepted request is lost."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.faults.conftest import FaultOrg, report, steady_load
from tests.faults.harness import Stack

pytestmark = pytest.mark.slow

ANSWER_WITHIN = 10.0  # seconds: every answer, during the outage too


async def test_postgres_restart_under_load(stack: Stack, fault_org: FaultOrg) -> None:
    source = await fault_org.post(
        "/v1/intake-sources", {"kind": "form", "name": "Restart", "rate_limit_per_minute": 0}
    )
    load_start = time.monotonic()
    load = asyncio.create_task(
        steady_load(fault_org.http, source["endpoint"], rate=15, seconds=24, tag="pgrestart")
    )
    await asyncio.sleep(5)
    await asyncio.to_thread(stack.postgres.stop, "fast")
    down_at = time.monotonic()
    await asyncio.sleep(1)
    # An authenticated read while it is down: a 503 problem, at once.
    began = time.monotonic()
    r = await fault_org.http.get("/v1/leads", headers=fault_org.auth())
    read_seconds = time.monotonic() - began
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "retry-after" in r.headers and read_seconds < ANSWER_WITHIN
    await asyncio.sleep(max(0.0, 8 - (time.monotonic() - down_at)))
    await asyncio.to_thread(stack.postgres.start)
    up_at = time.monotonic()
    sent = await load

    accepted = [s for s in sent if s.status in (200, 201)]
    refused = [s for s in sent if s.status == 503]
    others = [(s.status, s.body) for s in sent if s.status not in (200, 201, 503)]
    slowest = max(s.seconds for s in sent)
    conn = await asyncpg.connect(stack.postgres.psql_url(stack.database))
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM leads WHERE org_id = $1 AND id = ANY($2::uuid[])",
            fault_org.id,
            [s.lead_id for s in accepted],
        )
        duplicates = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT lower(email)) FROM leads WHERE org_id = $1", fault_org.id
        )
    finally:
        await conn.close()
    # Requests sent a few seconds after PostgreSQL is back are all accepted (no API restart).
    tail = [s for s in sent if s.at > up_at - load_start + 3]
    report(
        "postgres restart",
        sent=len(sent),
        accepted=len(accepted),
        refused_503=len(refused),
        stored=stored,
        duplicates=duplicates,
        other=len(others),
        slowest_answer_s=round(slowest, 2),
        after_recovery=len(tail),
    )
    assert not others, others[:5]
    assert all(s.body.get("code") in ("database_unavailable", "database_busy") for s in refused), refused[:3]
    assert refused, "the outage was not seen"
    assert slowest < ANSWER_WITHIN
    assert stored == len(accepted) and duplicates == 0
    assert tail and all(s.status in (200, 201) for s in tail), [s.status for s in tail]
