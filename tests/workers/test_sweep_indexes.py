"""The sweeps that run every few seconds read through partial indexes holding only the rows
they can act on, so their cost follows the open work, not the history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from app.models.base import utcnow
from app.services.assignment.recycling import quiet_leads_stmt
from app.services.assignment.sla import due_stmt
from app.services.followups import overdue_tasks_stmt
from app.state import AppState


async def _plan(state: AppState, stmt: Any) -> str:
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
    async with state.sessions() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))  # an empty test table is no guide
        rows = await session.execute(text("EXPLAIN " + sql).execution_options(cross_tenant=True))
        plan = "\n".join(str(r[0]) for r in rows)
        await session.rollback()
    return plan


@pytest.mark.parametrize(
    ("stmt", "index"),
    [
        (lambda now: due_stmt(now), "ix_assignment_decisions_sla_pending"),
        (lambda now: overdue_tasks_stmt(now), "ix_activities_open_due"),
        (lambda now: quiet_leads_stmt(now - timedelta(days=7)), "ix_leads_owned_open"),
    ],
)
async def test_each_sweep_reads_its_partial_index(state: AppState, stmt: Any, index: str) -> None:
    plan = await _plan(state, stmt(utcnow()))
    assert index in plan, plan
