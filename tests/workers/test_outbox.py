"""The transactional outbox: commit -> job once; rollback -> no job; Redis down -> job later."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from arq.jobs import Job
from sqlalchemy import select
from sqlmodel import col

from app.config import Settings
from app.main import create_app
from app.models.assignment import AssignmentDecision
from app.models.events import Ping
from app.models.outbox import JobRun, OutboxEvent
from app.services import outbox
from app.state import AppState
from app.workers.runner import run_worker
from tests.conftest import Org, Servers, fresh_database, make_org, wait_for
from tests.fixtures.redis_server import StoppableRedis


async def _job_runs(client: httpx.AsyncClient, org: Org, event_id: str) -> int:
    r = await client.get(f"/v1/diagnostics/outbox/{event_id}", headers=org.auth())
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    return sum(j["runs"] for j in jobs)


async def test_committed_event_runs_its_job_exactly_once(org: Org, worker: None) -> None:
    r = await org.client.post("/v1/diagnostics/ping", headers=org.auth())
    assert r.status_code == 202
    event_id = r.json()["id"]
    assert await wait_for(lambda: _job_runs(org.client, org, event_id)) == 1
    # The relay wakes every 200 ms and the sweep every 15 s; give a duplicate time to appear.
    await asyncio.sleep(1.0)
    assert await _job_runs(org.client, org, event_id) == 1
    body = (await org.client.get(f"/v1/diagnostics/outbox/{event_id}", headers=org.auth())).json()
    assert body["dispatched_at"] is not None
    assert body["jobs"][0]["job_name"] == "ping"


async def test_rolled_back_event_never_becomes_a_job(org: Org, state: AppState, worker: None) -> None:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        event = await outbox.emit(session, Ping())
        await session.flush()
        event_id = event.id
        await session.rollback()
    # A committed event after it is processed: the relay has certainly looked by then.
    r = await org.client.post("/v1/diagnostics/ping", headers=org.auth())
    assert await wait_for(lambda: _job_runs(org.client, org, r.json()["id"])) == 1
    async with state.sessions() as session:
        rows = await session.execute(
            select(col(OutboxEvent.id))
            .where(col(OutboxEvent.id) == event_id)
            .execution_options(cross_tenant=True)
        )
        assert rows.first() is None
        runs = await session.execute(
            select(JobRun).where(col(JobRun.outbox_id) == event_id).execution_options(cross_tenant=True)
        )
        assert runs.first() is None


async def test_write_succeeds_with_redis_down_and_job_runs_when_it_returns(
    settings: Settings, servers: Servers, tmp_path: Path
) -> None:
    # A database and a Redis of its own: the session's relay must not pick up these events.
    async with fresh_database(servers) as database_url:
        await _redis_outage(settings, database_url, tmp_path)


async def _redis_outage(settings: Settings, database_url: str, tmp_path: Path) -> None:
    redis = StoppableRedis(tmp_path / "redis")
    redis.start()
    own = settings.model_copy(
        update={
            "database_url": database_url,
            "redis_url": redis.url,
            "queue_name": f"q-{uuid.uuid4().hex[:6]}",
        }
    )
    state = AppState.open(own)
    app = create_app(own, state=state)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(own, stop))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            org = await make_org(state, client)
            assert (await client.get("/readyz")).status_code == 200

            redis.stop()
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["down"] == ["redis"]

            # Writes still succeed: a user, and an event whose job must run later.
            r = await client.post("/v1/users", json={"email": "while-down@example.com"}, headers=org.auth())
            assert r.status_code == 201
            r = await client.post("/v1/diagnostics/ping", headers=org.auth())
            assert r.status_code == 202
            event_id = r.json()["id"]
            await asyncio.sleep(0.5)
            assert await _job_runs(client, org, event_id) == 0

            redis.start()
            assert await wait_for(lambda: _job_runs(client, org, event_id), timeout=30) == 1
            assert (await client.get("/readyz")).status_code == 200
            users = (await client.get("/v1/users?q=while-down", headers=org.auth())).json()
            assert [u["email"] for u in users["data"]] == ["while-down@example.com"]
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=20)
        await state.close()
        redis.stop()


@pytest.mark.parametrize("count", [20])
async def test_many_events_each_run_once(org: Org, worker: None, count: int) -> None:
    ids = []
    for _ in range(count):
        r = await org.client.post("/v1/diagnostics/ping", headers=org.auth())
        ids.append(r.json()["id"])

    async def all_done() -> bool:
        runs = [await _job_runs(org.client, org, i) for i in ids]
        return all(n == 1 for n in runs)

    assert await wait_for(all_done, timeout=20)


def test_one_notify_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of outbox writes sends one NOTIFY per interval, not one each (each NOTIFY takes a
    database-wide lock at commit); the first write after a quiet interval notifies at once."""
    clock = [1000.0]
    monkeypatch.setattr(outbox, "_clock", lambda: clock[0])
    monkeypatch.setattr(outbox, "_last_notify", 0.0)
    assert outbox.notify_due() is True
    assert [outbox.notify_due() for _ in range(50)] == [False] * 50
    clock[0] += outbox.NOTIFY_INTERVAL + 0.001
    assert outbox.notify_due() is True and outbox.notify_due() is False


async def test_a_burst_of_leads_all_reach_the_relay(org: Org, state: AppState, worker: None) -> None:
    """Leads posted together (most without a NOTIFY of their own) all become jobs soon."""
    r = await org.client.post(
        "/v1/intake-sources", json={"kind": "form", "name": "burst"}, headers=org.auth()
    )
    endpoint = r.json()["endpoint"]
    answers = await asyncio.gather(
        *[org.client.post(endpoint, json={"email": f"burst{i}@example.com"}) for i in range(15)]
    )
    assert [a.status_code for a in answers] == [201] * 15
    ids = [a.json()["lead_id"] for a in answers]

    async def all_dispatched() -> bool:
        async with state.sessions() as session:
            rows = (
                await session.execute(
                    select(col(OutboxEvent.dispatched_at))
                    .where(
                        col(OutboxEvent.org_id) == uuid.UUID(org.id),
                        col(OutboxEvent.event_type) == "lead.created",
                    )
                    .execution_options(cross_tenant=True)
                )
            ).all()
        return len(rows) == len(ids) and all(row[0] is not None for row in rows)

    assert await wait_for(all_dispatched, timeout=10)


async def test_metrics_show_job_outcomes_queue_and_outbox(org: Org, worker: None) -> None:
    r = await org.client.post("/v1/diagnostics/ping", headers=org.auth())
    assert await wait_for(lambda: _job_runs(org.client, org, r.json()["id"])) == 1
    text = (await org.client.get("/metrics")).text
    ok = [line for line in text.splitlines() if line.startswith('loudou_jobs_total{job="ping",outcome="ok"}')]
    assert ok and float(ok[0].split()[-1]) >= 1
    assert "loudou_queue_depth{queue=" in text
    assert "loudou_outbox_pending " in text
    assert 'loudou_job_lag_samples_total{job="ping"}' in text


async def test_the_relay_sends_a_batch_of_new_leads_as_one_assignment_job(
    settings: Settings, servers: Servers
) -> None:
    """One `assign_leads` job per organisation and dispatched batch, not one job per lead."""
    from app.workers.registry import assignment_queue
    from app.workers.relay import relay_once

    async with fresh_database(servers) as database_url:  # no session relay takes these events
        own = settings.model_copy(
            update={"database_url": database_url, "queue_name": f"q-{uuid.uuid4().hex[:6]}"}
        )
        state = AppState.open(own)
        app = create_app(own, state=state)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                orgs = [await make_org(state, client) for _ in range(2)]
                leads: dict[str, set[str]] = {}
                lead_ids: dict[str, list[str]] = {}
                for org, count in zip(orgs, (5, 2), strict=True):
                    for i in range(count):
                        r = await client.post(
                            "/v1/leads",
                            json={"email": f"b{i}-{uuid.uuid4().hex[:6]}@x.example"},
                            headers=org.auth(),
                        )
                        assert r.status_code == 201, r.text
                        lead_ids.setdefault(org.id, []).append(r.json()["id"])
                    async with state.sessions() as session:
                        rows = await session.execute(
                            select(col(OutboxEvent.id))
                            .where(
                                col(OutboxEvent.org_id) == uuid.UUID(org.id),
                                col(OutboxEvent.event_type) == "lead.created",
                            )
                            .execution_options(cross_tenant=True)
                        )
                        leads[org.id] = {str(row[0]) for row in rows}
            assert await relay_once(state) >= 7
            queued = await state.redis.zrange(assignment_queue(own), 0, -1)
            jobs = {}
            for job_id in queued:
                name = job_id.decode() if isinstance(job_id, bytes) else job_id
                job = await Job(name, state.redis, _queue_name=assignment_queue(own)).info()
                assert job is not None
                jobs[name] = job
            assert len(jobs) == 2 and all(name.startswith("assign_leads:") for name in jobs)
            assert {job.args[1]: set(job.args[0]) for job in jobs.values()} == leads
            # Each job carries its events' leads, oldest first: it need not read the events back.
            assert {job.args[1]: job.kwargs["lead_ids"] for job in jobs.values()} == lead_ids
            # A job enqueued without them (by an older relay) reads its events for the leads.
            from app.workers.assignment import assign_leads

            first = next(job for job in jobs.values() if job.args[1] == orgs[0].id)
            assert await assign_leads({"state": state}, first.args[0], first.args[1]) == "5 decided"
            async with state.sessions() as session:
                decided = await session.execute(
                    select(col(AssignmentDecision.lead_id))
                    .where(col(AssignmentDecision.org_id) == uuid.UUID(orgs[0].id))
                    .execution_options(cross_tenant=True)
                )
                assert {str(row[0]) for row in decided} == set(lead_ids[orgs[0].id])
        finally:
            await state.close()


async def test_lead_events_become_follow_up_jobs_only_where_a_lead_policy_is_active(
    settings: Settings, servers: Servers
) -> None:
    """Every default pipeline has stage follow-up intervals (about deals): a lead's events need
    the follow-up job only in an organisation with an active lead-status policy, a deal's still
    need it for the stage intervals."""
    from app.models.events import DealStageChanged, LeadAssigned
    from app.workers.relay import relay_once

    async with fresh_database(servers) as database_url:  # no session relay takes these events
        own = settings.model_copy(
            update={"database_url": database_url, "queue_name": f"q-{uuid.uuid4().hex[:6]}"}
        )
        state = AppState.open(own)
        app = create_app(own, state=state)

        async def emit(org: Org, *events: LeadAssigned | DealStageChanged) -> list[str]:
            async with state.sessions() as session:
                session.info["org_id"] = uuid.UUID(org.id)
                rows = [await outbox.emit(session, event) for event in events]
                await session.commit()
                return [str(row.id) for row in rows]

        async def followup_jobs() -> dict[str, set[str]]:
            """org id -> the outbox ids of its queued schedule_followups jobs."""
            jobs: dict[str, set[str]] = {}
            for job_id in await state.redis.zrange(own.queue_name, 0, -1):
                name = job_id.decode() if isinstance(job_id, bytes) else job_id
                job = await Job(name, state.redis, _queue_name=own.queue_name).info()
                assert job is not None
                if job.function == "schedule_followups":
                    jobs.setdefault(job.args[1], set()).update(job.args[0])
            return jobs

        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                plain, with_policy = [await make_org(state, client) for _ in range(2)]
                r = await client.post(
                    "/v1/followup-policies",
                    json={"name": "Call new leads", "lead_status": "new", "interval": "PT4H"},
                    headers=with_policy.auth(),
                )
                assert r.status_code == 201, r.text
            lead = LeadAssigned(lead_id=uuid.uuid4(), owner_id=uuid.uuid4())
            deal = DealStageChanged(deal_id=uuid.uuid4())
            plain_ids = await emit(plain, lead, deal)
            policy_ids = await emit(with_policy, lead, deal)
            assert await relay_once(state) == 4
            # The organisation without a lead policy: only its deal event is a follow-up job.
            assert await followup_jobs() == {plain.id: {plain_ids[1]}, with_policy.id: set(policy_ids)}
        finally:
            await state.close()
