"""A batch of lead events schedules what the same events one by one would: one open follow-up
task per lead at most, due from its own event's time; gone or unowned leads get none."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, text
from sqlmodel import col

from app.db import tenant_session
from app.models.base import utcnow
from app.models.lead import Activity, ActivityKind
from app.services import followups
from app.state import AppState
from tests.conftest import Org


async def test_a_batch_gives_each_owned_lead_one_task_due_from_its_first_event(
    state: AppState, org: Org
) -> None:
    rep, _ = await org.add_user("rep")
    r = await org.client.post(
        "/v1/followup-policies",
        json={"name": "New leads", "lead_status": "new", "interval": "PT1H", "task_subject": "Call"},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    leads = []
    for i in range(4):  # pooled (no rule): no event of theirs schedules anything meanwhile
        r = await org.client.post("/v1/leads", json={"email": f"b{i}@example.com"}, headers=org.auth())
        assert r.status_code == 201, r.text
        leads.append(uuid.UUID(r.json()["id"]))
    twice, once, unowned, deleted = leads
    org_id = uuid.UUID(org.id)
    async with tenant_session(state.sessions, org_id) as s:
        # Owned without an event, so only the batch below can schedule their tasks.
        await s.execute(
            text("UPDATE leads SET owner_id = :rep WHERE org_id = :org AND id = ANY(:ids)"),
            {"rep": uuid.UUID(rep), "org": org_id, "ids": [twice, once, deleted]},
        )
        await s.execute(
            text("UPDATE leads SET deleted_at = now() WHERE org_id = :org AND id = :id"),
            {"org": org_id, "id": deleted},
        )
        await s.commit()
    t0 = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    events = [
        (twice, t0),
        (once, t0 + timedelta(seconds=1)),
        (uuid.uuid4(), t0),  # a lead that is gone
        (unowned, t0),
        (deleted, t0),
        (twice, t0 + timedelta(seconds=2)),  # the task of the first event is still open
    ]
    async with tenant_session(state.sessions, org_id) as s:
        assert await followups.schedule_after_leads(s, events) == 2
        await s.commit()
    async with tenant_session(state.sessions, org_id) as s:
        tasks = (
            await s.execute(
                select(Activity).where(
                    col(Activity.lead_id).in_(leads), col(Activity.kind) == ActivityKind.task.value
                )
            )
        ).scalars()
        by_lead = {}
        for task in tasks:
            assert task.lead_id not in by_lead
            by_lead[task.lead_id] = task
    assert set(by_lead) == {twice, once}
    assert by_lead[twice].due_at == t0 + timedelta(hours=1)
    assert by_lead[once].due_at == t0 + timedelta(seconds=1, hours=1)
    assert by_lead[twice].owner_id == uuid.UUID(rep) and by_lead[twice].subject == "Call"
    assert by_lead[twice].details["lead_status"] == "new"

    # Again with the tasks open: nothing more.
    async with tenant_session(state.sessions, org_id) as s:
        assert await followups.schedule_after_leads(s, events) == 0
        await s.commit()
