"""Batch assignment: one job assigns its lead and the undecided new leads after it, in one
transaction under the rule cursor's lock; round robin stays exact and every lead is decided once."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select, text
from sqlmodel import col

from app.models.assignment import AssignmentDecision
from app.models.base import build, utcnow
from app.models.lead import Lead, LeadStatus
from app.services.assignment import engine
from app.state import AppState
from tests.conftest import Org
from tests.factories import make_team


@pytest.fixture(autouse=True)
def _fresh_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """The leads made by a test stay "fresh" (no catch-up) however slow the machine: the tests
    choose which leads a job is behind on by moving their created_at back."""
    monkeypatch.setattr(engine, "CATCH_UP_AFTER", timedelta(minutes=10))


async def _round_robin(org: Org, reps: int = 3) -> list[str]:
    users = [(await org.add_user("rep"))[0] for _ in range(reps)]
    r = await org.client.post(
        "/v1/assignment-rules",
        json={"name": "rr", "target_user_ids": users, "strategy": "round_robin"},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    return users


async def _leads(state: AppState, org: Org, count: int) -> list[uuid.UUID]:
    """New pooled leads written straight through a session: no outbox event, so no job races the test."""
    org_id = uuid.UUID(org.id)
    start = utcnow()
    ids = []
    async with state.sessions() as session:
        session.info["org_id"] = org_id
        for i in range(count):
            at = start + timedelta(milliseconds=i)
            lead = build(
                Lead,
                org_id=org_id,
                email=f"b{i}-{uuid.uuid4().hex[:6]}@x.example",
                created_at=at,
                updated_at=at,
            )
            session.add(lead)
            ids.append(lead.id)
        await session.commit()
    return ids


async def _decisions(state: AppState, org: Org) -> list[AssignmentDecision]:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        return list(
            (
                await session.execute(
                    select(AssignmentDecision).order_by(AssignmentDecision.created_at, AssignmentDecision.id)  # type: ignore[arg-type]
                )
            ).scalars()
        )


async def _run(state: AppState, org: Org, lead_id: uuid.UUID, limit: int) -> AssignmentDecision:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        decision = await engine.assign_created_batch(
            session, lead_id=lead_id, trigger_key=f"lead.created:{lead_id}", limit=limit
        )
        await session.commit()
        return decision


async def test_one_job_assigns_a_batch_in_order_and_the_others_find_their_decision(
    org: Org, state: AppState
) -> None:
    users = await _round_robin(org)
    ids = await _leads(state, org, 7)
    first = await _run(state, org, ids[0], limit=5)
    assert first.lead_id == ids[0] and first.outcome == "assigned"
    decisions = await _decisions(state, org)
    assert [d.lead_id for d in decisions] == ids[:5]  # the job's lead, then the next four, oldest first
    # The decision log is exact: each decision starts from the state the previous one left.
    for before, after in pairwise(decisions):
        assert after.state_before == before.state_after
    assert [str(d.chosen_user_id) for d in decisions] == [users[i % 3] for i in range(5)]
    # A claimed lead's own job changes nothing; the rest get a batch of their own.
    again = await _run(state, org, ids[3], limit=5)
    assert again.id == decisions[3].id
    await _run(state, org, ids[5], limit=5)
    decisions = await _decisions(state, org)
    assert [d.lead_id for d in decisions] == ids
    assert [str(d.chosen_user_id) for d in decisions] == [users[i % 3] for i in range(7)]


async def test_concurrent_batches_decide_every_lead_once_and_stay_fair(org: Org, state: AppState) -> None:
    users = await _round_robin(org)
    ids = await _leads(state, org, 40)
    busy = 0

    async def job(lead_id: uuid.UUID) -> None:
        nonlocal busy
        while True:
            try:
                await _run(state, org, lead_id, limit=8)
                return
            except engine.LeadBusy:  # in another batch: the worker retries it shortly, so do we
                busy += 1
                await asyncio.sleep(0.05)

    # Every lead's job at once, as many workers would run them: batches claim disjoint leads.
    await asyncio.gather(*[job(lead_id) for lead_id in ids])
    decisions = await _decisions(state, org)
    assert sorted(d.lead_id for d in decisions) == sorted(ids)  # each exactly once
    per_rep = Counter(str(d.chosen_user_id) for d in decisions)
    assert set(per_rep) == set(users)
    assert max(per_rep.values()) - min(per_rep.values()) <= 1
    for before, after in pairwise(decisions):
        assert after.state_before == before.state_after
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        owners = (
            (await session.execute(select(col(Lead.owner_id)).where(col(Lead.id).in_(ids)))).scalars().all()
        )
    assert None not in owners


async def _assign_ids(state: AppState, org: Org, ids: list[uuid.UUID], **kw: object) -> engine.BatchOutcome:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        outcome = await engine.assign_created_leads(session, ids, **kw)  # type: ignore[arg-type]
        await session.commit()
        return outcome


async def test_a_relay_batch_is_decided_in_one_transaction_in_order_and_once(
    org: Org, state: AppState
) -> None:
    users = await _round_robin(org)
    ids = await _leads(state, org, 9)
    # The relay's batch (out of order, as events may be): decided oldest first.
    outcome = await _assign_ids(state, org, [ids[4], ids[0], ids[2], ids[1], ids[3]])
    assert (outcome.decided, outcome.undecided) == (5, 0)
    decisions = await _decisions(state, org)
    assert [d.lead_id for d in decisions] == ids[:5]
    assert [str(d.chosen_user_id) for d in decisions] == [users[i % 3] for i in range(5)]
    for before, after in pairwise(decisions):
        assert after.state_before == before.state_after
    # The same batch again (arq may run a job twice): nothing more.
    assert (await _assign_ids(state, org, ids[:5])).decided == 0
    assert len(await _decisions(state, org)) == 5
    # The next batch goes on from the cursor the first one left.
    await _assign_ids(state, org, ids[5:])
    decisions = await _decisions(state, org)
    assert [d.lead_id for d in decisions] == ids
    assert [str(d.chosen_user_id) for d in decisions] == [users[i % 3] for i in range(9)]


async def test_a_lead_held_elsewhere_is_left_undecided_for_the_retry(org: Org, state: AppState) -> None:
    await _round_robin(org)
    ids = await _leads(state, org, 3)
    async with state.sessions() as holder:
        holder.info["org_id"] = uuid.UUID(org.id)
        await holder.execute(select(Lead).where(Lead.id == ids[1]).with_for_update())  # type: ignore[arg-type]
        outcome = await _assign_ids(state, org, ids)
        assert (outcome.decided, outcome.undecided) == (2, 1)
    outcome = await _assign_ids(state, org, ids)  # the retry, once the lock is gone
    assert (outcome.decided, outcome.undecided) == (1, 0)
    assert sorted(d.lead_id for d in await _decisions(state, org)) == sorted(ids)


async def test_a_job_that_is_behind_catches_up_on_the_backlog(org: Org, state: AppState) -> None:
    users = await _round_robin(org)
    ids = await _leads(state, org, 6)
    # Fresh leads: a job keeps to its own.
    assert (await _assign_ids(state, org, ids[:1])).decided == 1
    assert [d.lead_id for d in await _decisions(state, org)] == ids[:1]
    # The job's lead has waited past CATCH_UP_AFTER: the undecided leads after it come along.
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        for lead in (await session.execute(select(Lead).where(Lead.id.in_(ids)))).scalars():  # type: ignore[attr-defined]
            lead.created_at -= engine.CATCH_UP_AFTER * 2
        await session.commit()
    outcome = await _assign_ids(state, org, ids[1:2], more=3)
    assert (outcome.decided, outcome.undecided) == (4, 0)
    decisions = await _decisions(state, org)
    assert [d.lead_id for d in decisions] == ids[:5]
    assert [str(d.chosen_user_id) for d in decisions] == [users[i % 3] for i in range(5)]
    # A later job for a caught-up lead finds nothing to do.
    assert (await _assign_ids(state, org, ids[3:4])).decided == 0


async def _set_up_twin(org: Org) -> None:
    """Two reps in a team and one without, a round-robin rule with a contact SLA."""
    team = await make_team(org)
    users = [(await org.add_user("rep", team_id=team, name=f"Rep {i}"))[0] for i in range(2)]
    users.append((await org.add_user("rep", name="Rep 2"))[0])
    r = await org.client.post(
        "/v1/assignment-rules",
        json={"name": "rr", "target_user_ids": users, "strategy": "round_robin", "contact_sla": "PT2H"},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text


async def _twin_leads(state: AppState, org: Org) -> list[uuid.UUID]:
    """Four pooled leads, one already owned and one closed (both decided "kept")."""
    ids = await _leads(state, org, 6)
    owner, _ = await org.add_user("rep")
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        owned = await session.get(Lead, ids[2])
        closed = await session.get(Lead, ids[4])
        assert owned is not None and closed is not None
        owned.owner_id, owned.pooled = uuid.UUID(owner), False
        closed.status = LeadStatus.unqualified
        await session.commit()
    return ids


# Columns that differ between the twins for reasons other than assignment: the change-feed
# bookkeeping, the leads' emails (each organisation has its own), and an event's delivery state,
# which the session's relay may advance for one organisation before the other is read.
IGNORED = frozenset({"change_xid", "change_seq", "email", "dispatched_at", "attempts", "last_error"})

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def _rows(state: AppState, org: Org) -> dict[str, list[dict[str, object]]]:
    """Every row the assignments wrote, in a comparable form: ids replaced by their order of
    appearance in the organisation, times by whether they are set."""
    names: dict[str, str] = {}

    def norm(value: object) -> object:
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, uuid.UUID):
            return names.setdefault(str(value), f"id{len(names)}")
        if isinstance(value, str) and UUID_TEXT.search(value):
            return UUID_TEXT.sub(lambda m: names.setdefault(m[0], f"id{len(names)}"), value)
        if isinstance(value, datetime) or (isinstance(value, str) and value[:2] == "20" and "T" in value):
            return "time"
        return value

    org_id = uuid.UUID(org.id)
    names[str(org_id)] = "org"
    async with state.sessions() as session:
        session.info["org_id"] = org_id
        conn = await session.connection()
        out: dict[str, list[dict[str, object]]] = {}
        for name, sql in (
            ("users", "SELECT id FROM users WHERE org_id = :o ORDER BY created_at, id"),
            ("rules", "SELECT id FROM assignment_rules WHERE org_id = :o"),
            ("leads", "SELECT * FROM leads WHERE org_id = :o ORDER BY created_at"),
            ("decisions", "SELECT * FROM assignment_decisions WHERE org_id = :o ORDER BY created_at, id"),
            (
                "audit",
                "SELECT a.* FROM audit_log a JOIN leads l ON l.org_id = a.org_id AND l.id = a.entity_id"
                " WHERE a.org_id = :o ORDER BY l.created_at",
            ),
            (
                "events",
                "SELECT e.* FROM outbox e JOIN leads l ON l.org_id = e.org_id"
                " AND l.id = (e.payload->>'lead_id')::uuid"
                " WHERE e.org_id = :o AND e.event_type = 'lead.assigned' ORDER BY l.created_at",
            ),
        ):
            rows = (await conn.execute(text(sql), {"o": org_id})).mappings().all()
            out[name] = [{k: norm(v) for k, v in row.items() if k not in IGNORED} for row in rows]
        # The cursor's state names the last rep chosen and counts the leads.
        state_row = (
            await conn.execute(text("SELECT state FROM assignment_cursors WHERE org_id = :o"), {"o": org_id})
        ).scalar_one()
        out["cursor"] = [{"state": norm(state_row)}]
    return out


async def test_the_batch_writes_the_rows_lead_by_lead_assignment_writes(
    org: Org, other_org: Org, state: AppState
) -> None:
    """`assign_created_leads` writes the owners, audit entries, events and decisions with one
    statement a table: the same rows as `assign_created_lead`, which goes lead by lead through the
    ORM (`set_owner`), in an organisation set up the same way."""
    await _set_up_twin(org)
    await _set_up_twin(other_org)
    one_by_one = await _twin_leads(state, org)
    batched = await _twin_leads(state, other_org)
    for lead_id in one_by_one:
        async with state.sessions() as session:
            session.info["org_id"] = uuid.UUID(org.id)
            await engine.assign_created_lead(session, lead_id=lead_id, trigger_key=f"lead.created:{lead_id}")
            await session.commit()
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(other_org.id)
        outcome = await engine.assign_created_leads(session, batched)
        await session.commit()
    assert (outcome.decided, outcome.undecided) == (6, 0)

    expected, got = await _rows(state, org), await _rows(state, other_org)
    assert len(got["decisions"]) == 6 and len(got["audit"]) == len(got["events"]) == 4
    assert [d["outcome"] for d in got["decisions"]] == [
        "assigned",
        "assigned",
        "kept",
        "assigned",
        "kept",
        "assigned",
    ]
    # Round robin in order: the two team members, the rep without a team, the first again.
    owners = [lead["owner_id"] for lead in got["leads"]]
    assert owners[0] != owners[1] != owners[3] != owners[0] and owners[5] == owners[0]
    assert got["leads"][0]["team_id"] is not None and got["leads"][3]["team_id"] is None
    assert all(lead["version"] == 2 for i, lead in enumerate(got["leads"]) if i not in (2, 4))
    for table in expected:
        assert got[table] == expected[table], table


async def test_a_batch_needs_a_session_of_the_organisation(org: Org, state: AppState) -> None:
    """The batch reads and writes rows without the ORM's organisation filter: an unscoped session
    is refused before any row is touched."""
    from app.db import TenancyError

    ids = await _leads(state, org, 2)
    async with state.sessions() as session:
        with pytest.raises(TenancyError):
            await engine.assign_created_leads(session, ids)
    assert await _decisions(state, org) == []


async def test_a_given_lead_the_budget_left_is_counted_undecided(
    org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that is behind takes newer pooled leads along, in created_at order; when its time
    budget runs out before one of its own leads, that lead is reported undecided (the job's retry
    takes it) even though as many leads were decided as the job was given."""
    await _round_robin(org)
    ids = await _leads(state, org, 3)
    async with state.sessions() as session:
        await session.execute(
            text("UPDATE leads SET created_at = created_at - interval '1 hour' WHERE org_id = :o"),
            {"o": uuid.UUID(org.id)},
        )
        await session.commit()
    clock = iter([0.0, 0.0, 0.0, 100.0])  # the deadline, then the check before each lead
    monkeypatch.setattr(engine, "monotonic", lambda: next(clock))
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        outcome = await engine.assign_created_leads(session, [ids[0], ids[2]], budget_seconds=1.0)
        await session.commit()
    assert (outcome.decided, outcome.undecided) == (2, 1)
    assert {d.lead_id for d in await _decisions(state, org)} == {ids[0], ids[1]}
