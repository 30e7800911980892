"""(b) A worker SIGKILLed during assignment, during a webhook delivery run and during a
follow-up sweep: no job lost (every lead assigned, every delivery made, every follow-up task
created and flagged overdue), none applied twice."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.faults.conftest import FaultOrg, report
from tests.faults.harness import Stack
from tests.faults.receiver import Receiver

pytestmark = pytest.mark.slow

LEADS = 40
RECOVERED_WITHIN = 90.0  # arq re-runs a killed job once its lease ends; the sweeps catch the rest


async def _kill_and_restart(stack: Stack, index: int) -> None:
    size = stack.log_size(index)
    await asyncio.to_thread(stack.kill_worker, index)
    stack.start_worker(index)
    await asyncio.to_thread(stack.wait_workers_ready, {index: size})


async def test_sigkilled_workers_lose_nothing_and_apply_nothing_twice(
    stack: Stack, fault_org: FaultOrg
) -> None:
    receiver = Receiver({"/hook": 0.5})
    receiver.start()
    try:
        await fault_org.add_reps(4)
        await fault_org.post(
            "/v1/followup-policies", {"name": "Call back", "lead_status": "new", "interval": "PT2S"}
        )
        await fault_org.post(
            "/v1/webhook-subscriptions",
            {"url": receiver.url("/hook"), "event_types": ["lead.created", "lead.assigned", "task.overdue"]},
        )
        answers = await asyncio.gather(
            *[
                fault_org.http.post(
                    "/v1/leads", json={"email": f"kill-{i}@example.com"}, headers=fault_org.auth()
                )
                for i in range(LEADS)
            ]
        )
        assert [r.status_code for r in answers] == [201] * LEADS
        lead_ids = [r.json()["id"] for r in answers]
        # 1. Mid-assignment: the relay has just handed the new leads' jobs to the workers.
        await asyncio.sleep(0.3)
        await _kill_and_restart(stack, 0)
        # 2. Mid-delivery: every delivery to the receiver takes half a second.
        wait_until = time.monotonic() + 30
        while not receiver.received["/hook"] and time.monotonic() < wait_until:
            await asyncio.sleep(0.05)
        await _kill_and_restart(stack, 1)
        # 3. Mid-sweep: the overdue sweep runs at seconds 1, 6, 11 … of each minute.
        await asyncio.sleep(3)  # the first tasks are due
        now = time.time()
        next_tick = now - (now % 5) + 1 + (5 if now % 5 > 1 else 0)
        await asyncio.sleep(max(0.0, next_tick - time.time()) + 0.05)
        await _kill_and_restart(stack, 0)

        conn = await asyncpg.connect(stack.postgres.psql_url(stack.database))
        try:

            async def counts() -> dict[str, int]:
                row = await conn.fetchrow(
                    """
                    SELECT
                      (SELECT count(*) FROM leads WHERE org_id = $1 AND owner_id IS NOT NULL) AS assigned,
                      (SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM assignment_decisions
                         WHERE org_id = $1 GROUP BY lead_id) d) AS decisions_twice,
                      (SELECT count(*) FROM activities WHERE org_id = $1 AND kind = 'task') AS tasks,
                      (SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM activities
                         WHERE org_id = $1 AND kind = 'task' GROUP BY lead_id) t) AS tasks_twice,
                      (SELECT count(*) FROM outbox WHERE org_id = $1 AND event_type = 'task.overdue') AS overdue,
                      (SELECT count(DISTINCT payload->>'task_id') FROM outbox
                         WHERE org_id = $1 AND event_type = 'task.overdue') AS overdue_tasks,
                      (SELECT count(*) FROM webhook_deliveries WHERE org_id = $1) AS deliveries,
                      (SELECT count(*) FROM webhook_deliveries WHERE org_id = $1 AND status = 'succeeded')
                        AS delivered
                    """,
                    fault_org.id,
                )
                assert row is not None
                return dict(row)

            deadline = time.monotonic() + RECOVERED_WITHIN
            while True:
                c = await counts()
                done = (
                    c["assigned"] == LEADS
                    and c["tasks"] >= LEADS
                    and c["overdue_tasks"] >= LEADS
                    # lead.created + lead.assigned + task.overdue per lead
                    and c["deliveries"] == 3 * LEADS
                    and c["delivered"] == c["deliveries"]
                )
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
        finally:
            await conn.close()
    finally:
        receiver.stop()
    ids = receiver.ids("/hook")
    report(
        "worker kills",
        sent=LEADS,
        accepted=len(lead_ids),
        assigned=c["assigned"],
        tasks=c["tasks"],
        overdue_flagged=c["overdue_tasks"],
        deliveries=c["deliveries"],
        delivered=c["delivered"],
        received_ids=len(set(ids)),
        redelivered_same_id=len(ids) - len(set(ids)),
        duplicates=c["decisions_twice"] + c["tasks_twice"] + (c["overdue"] - c["overdue_tasks"]),
    )
    assert c["assigned"] == LEADS and c["decisions_twice"] == 0
    assert c["tasks"] == LEADS and c["tasks_twice"] == 0
    assert c["overdue_tasks"] == LEADS and c["overdue"] == LEADS
    assert c["deliveries"] == 3 * LEADS and c["delivered"] == 3 * LEADS
    # Every delivery reached the receiver under its own webhook-id (a try cut short by the kill
    # may arrive again under the same id, which receivers dedupe on: at least once, applied once).
    assert len(set(ids)) == 3 * LEADS
