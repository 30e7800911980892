"""(d) A webhook receiver that hangs (past the timeout) or answers slowly: its deliveries back
off while another subscriber's deliveries keep flowing on time."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from tests.faults.conftest import FaultOrg, report
from tests.faults.harness import Stack
from tests.faults.receiver import Receiver

pytestmark = pytest.mark.slow

LEADS = 20
ON_TIME = 5.0  # seconds from the lead's creation to the healthy receiver's copy


async def test_hanging_receiver_does_not_hold_up_others(stack: Stack, fault_org: FaultOrg) -> None:
    receiver = Receiver({"/ok": 0.0, "/slow": 1.5, "/hang": 60.0})
    receiver.start()
    try:
        subscriptions = {}
        for path in ("/ok", "/slow", "/hang"):
            sub = await fault_org.post(
                "/v1/webhook-subscriptions", {"url": receiver.url(path), "event_types": ["lead.created"]}
            )
            subscriptions[path] = sub["id"]
        created_at: dict[str, float] = {}
        for i in range(LEADS):
            r = await fault_org.http.post(
                "/v1/leads", json={"email": f"hook-{i}@example.com"}, headers=fault_org.auth()
            )
            assert r.status_code == 201, r.text
            created_at[r.json()["id"]] = time.monotonic()
            await asyncio.sleep(0.25)

        def lead_of(body: bytes) -> str:
            return str(json.loads(body)["data"]["lead_id"])

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            len({lead_of(r.body) for r in receiver.received["/ok"]}) < LEADS
            or len({lead_of(r.body) for r in receiver.received["/slow"]}) < LEADS
        ):
            await asyncio.sleep(0.2)
        await asyncio.sleep(6)  # let the hanging one's backoff show a few tries

        lags = sorted(
            min(r.at for r in receiver.received["/ok"] if lead_of(r.body) == lead) - created_at[lead]
            for lead in created_at
            if any(lead_of(r.body) == lead for r in receiver.received["/ok"])
        )
        conn = await asyncpg.connect(stack.postgres.psql_url(stack.database))
        try:
            rows = await conn.fetch(
                "SELECT d.subscription_id::text AS sub, d.id, d.status, d.attempts, "
                "array_agg(a.at ORDER BY a.number) AS tries "
                "FROM webhook_deliveries d LEFT JOIN webhook_attempts a "
                "ON a.org_id = d.org_id AND a.delivery_id = d.id "
                "WHERE d.org_id = $1 GROUP BY d.subscription_id, d.id, d.status, d.attempts",
                fault_org.id,
            )
        finally:
            await conn.close()
    finally:
        receiver.stop()
    by_sub = {path: [r for r in rows if r["sub"] == sub_id] for path, sub_id in subscriptions.items()}
    ok_ids, slow_ids = receiver.ids("/ok"), receiver.ids("/slow")
    hang_tries = [len([t for t in r["tries"] if t is not None]) for r in by_sub["/hang"]]
    gaps = [
        (b - a).total_seconds()
        for r in by_sub["/hang"]
        for a, b in zip(r["tries"], r["tries"][1:], strict=False)
        if a is not None and b is not None
    ]
    report(
        "slow receiver",
        sent=LEADS,
        ok_delivered=len(set(ok_ids)),
        ok_duplicates=len(ok_ids) - len(set(ok_ids)),
        ok_lag_p50=round(lags[len(lags) // 2], 2) if lags else None,
        ok_lag_max=round(lags[-1], 2) if lags else None,
        slow_delivered=len(set(slow_ids)),
        hang_deliveries=len(by_sub["/hang"]),
        hang_tries_max=max(hang_tries, default=0),
        hang_gap_min_s=round(min(gaps), 2) if gaps else None,
    )
    assert len(set(ok_ids)) == LEADS and len(ok_ids) == LEADS  # every event once, none twice
    assert lags[-1] < ON_TIME, lags
    assert all(r["status"] == "succeeded" for r in by_sub["/ok"] + by_sub["/slow"])
    assert len(set(slow_ids)) == LEADS
    # The hanging receiver: every try timed out, and the tries back off (1 s, 2 s, 4 s … apart).
    assert len(by_sub["/hang"]) == LEADS
    assert all(r["status"] in ("retrying", "in_flight", "pending") for r in by_sub["/hang"])
    assert max(hang_tries) >= 2 and min(gaps) >= 1.0, gaps
