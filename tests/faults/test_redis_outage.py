"""(a) Redis stopped for 20 s during steady intake: every request answered 2xx, every lead
stored, every lead assigned within 30 s of Redis returning, none twice."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.faults.conftest import FaultOrg, report, steady_load
from tests.faults.harness import Stack

pytestmark = pytest.mark.slow

OUTAGE = 20.0
ASSIGNED_WITHIN = 30.0


async def test_redis_outage_during_intake(stack: Stack, fault_org: FaultOrg) -> None:
    await fault_org.add_reps(3)
    source = await fault_org.post(
        "/v1/intake-sources", {"kind": "form", "name": "Outage", "rate_limit_per_minute": 1000}
    )
    load = asyncio.create_task(
        steady_load(fault_org.http, source["endpoint"], rate=6, seconds=OUTAGE + 6, tag="redis")
    )
    await asyncio.sleep(3)
    await asyncio.to_thread(stack.redis.stop)
    await asyncio.sleep(OUTAGE)
    await asyncio.to_thread(stack.redis.start)
    back_at = time.monotonic()
    sent = await load

    accepted = [s for s in sent if s.status == 201]
    conn = await asyncpg.connect(stack.postgres.psql_url(stack.database))
    try:
        lead_ids = [s.lead_id for s in accepted]
        stored = await conn.fetchval(
            "SELECT count(*) FROM leads WHERE org_id = $1 AND id = ANY($2::uuid[])", fault_org.id, lead_ids
        )
        assigned = 0
        while True:
            assigned = await conn.fetchval(
                "SELECT count(*) FROM leads WHERE org_id = $1 AND owner_id IS NOT NULL", fault_org.id
            )
            if assigned >= len(accepted) or time.monotonic() - back_at > ASSIGNED_WITHIN:
                break
            await asyncio.sleep(0.5)
        assigned_after = time.monotonic() - back_at
        duplicates = await conn.fetchval(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM assignment_decisions "
            "WHERE org_id = $1 GROUP BY lead_id) d",
            fault_org.id,
        )
        per_rep = await conn.fetch(
            "SELECT owner_id, count(*) FROM leads WHERE org_id = $1 GROUP BY owner_id", fault_org.id
        )
    finally:
        await conn.close()
    report(
        "redis outage",
        sent=len(sent),
        accepted=len(accepted),
        stored=stored,
        assigned=assigned,
        duplicates=duplicates,
        assigned_s_after_return=round(assigned_after, 1),
        per_rep=sorted(n for _, n in per_rep),
    )
    assert [s.status for s in sent if s.status != 201] == [], [
        (s.status, s.body) for s in sent if s.status != 201
    ][:5]
    assert stored == len(sent) == len(set(lead_ids))
    assert assigned == len(sent), (
        f"{assigned} of {len(sent)} assigned {ASSIGNED_WITHIN}s after Redis returned"
    )
    assert duplicates == 0
