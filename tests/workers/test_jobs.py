"""Thin jobs: `job_session` scopes the tenant and commits or rolls back; a gone row is a result."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from app.db import tenant_session
from app.models.events import LeadCreated
from app.models.lead import Lead
from app.services import outbox
from app.state import AppState
from app.workers.assignment import assign_lead
from app.workers.followups import schedule_followup
from app.workers.jobs import job_session
from tests.conftest import Org


async def _count(state: AppState, org_id: uuid.UUID, email: str) -> int:
    async with tenant_session(state.sessions, org_id) as s:
        return int(
            (
                await s.execute(select(func.count()).select_from(Lead).where(col(Lead.email) == email))
            ).scalar_one()
        )


async def test_job_session_scopes_the_tenant_commits_and_rolls_back(
    state: AppState, org: Org, other_org: Org
) -> None:
    ctx = {"state": state}
    org_id = uuid.UUID(org.id)
    async with job_session(ctx, org_id) as session:
        session.add(Lead(email="kept@example.com"))
    assert await _count(state, org_id, "kept@example.com") == 1
    with pytest.raises(RuntimeError):
        async with job_session(ctx, org_id) as session:
            session.add(Lead(email="dropped@example.com"))
            await session.flush()
            raise RuntimeError("the job failed")
    assert await _count(state, org_id, "dropped@example.com") == 0
    async with job_session(ctx, uuid.UUID(other_org.id)) as session:
        assert (
            await session.execute(select(Lead).where(col(Lead.email) == "kept@example.com"))
        ).first() is None


async def test_jobs_about_a_gone_lead_answer_so(state: AppState, org: Org) -> None:
    async with tenant_session(state.sessions, uuid.UUID(org.id)) as s:
        event = await outbox.emit(s, LeadCreated(lead_id=uuid.uuid4(), source="api"))
        await s.commit()
    ctx = {"state": state}
    assert await assign_lead(ctx, str(event.id)) == "lead gone"
    assert await schedule_followup(ctx, str(event.id)) == "lead gone"
    assert await assign_lead(ctx, str(uuid.uuid4())) == "gone"
