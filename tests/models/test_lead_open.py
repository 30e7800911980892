"""One definition of an open lead: one lead in every state, through every place that asks."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

from sqlalchemy import select, text
from sqlmodel import col

from app.db import SessionStatements, tenant_session
from app.models.base import utcnow
from app.models.lead import OPEN_LEAD, OPEN_LEAD_SQL, Lead, LeadSource, LeadStatus
from app.services.leads.batch import look_up_many
from app.services.leads.ingest import (
    count_open_owned,
    find_exact,
    find_fuzzy,
    lock_and_find,
)
from app.services.leads.normalise import LeadInput
from app.state import AppState
from tests.conftest import Org

# Written out here on purpose, not imported: the rule the code must agree with.
EXPECTED_OPEN = {"new", "working", "qualified"}


async def test_every_definition_of_an_open_lead_agrees(state: AppState, org: Org) -> None:
    org_id = uuid.UUID(org.id)
    owner = uuid.UUID(org.admin_id)
    expected: dict[uuid.UUID, bool] = {}
    leads: list[Lead] = []
    async with tenant_session(state.sessions, org_id) as session:
        anchor = Lead(status=LeadStatus.converted, email="anchor@example.com")
        session.add(anchor)
        await session.flush()
        expected[anchor.id] = False
        states = itertools.product(LeadStatus, (False, True), (False, True), (False, True))
        for i, (status, merged, deleted, erased) in enumerate(states):
            lead = Lead(
                status=status,
                email=f"state{i}@example.com",
                phone=f"+86138000{i:05d}",
                name=f"Person{i:03d} Zhang",
                company=f"Company{i:03d} Ltd",
                owner_id=owner,
                pooled=False,
                duplicate_of=anchor.id if merged else None,
                deleted_at=utcnow() if deleted else None,
                erased_at=utcnow() if erased else None,
            )
            leads.append(lead)
            expected[lead.id] = str(status) in EXPECTED_OPEN and not (merged or deleted or erased)
        session.add_all(leads)
        await session.commit()
    assert sum(expected.values()) == 3  # each open status once, in its one clean combination

    async with tenant_session(state.sessions, org_id) as session:
        run = SessionStatements(session)
        # The model's predicate
        loaded = (await session.execute(select(Lead))).scalars().all()
        assert {lead.id: lead.is_open for lead in loaded} == expected
        # The SQLAlchemy clause and its SQL text
        open_ids = {i for i, is_open in expected.items() if is_open}
        assert set((await session.execute(select(col(Lead.id)).where(OPEN_LEAD))).scalars()) == open_ids
        by_text = await run.fetch(
            text(f"SELECT id FROM leads WHERE org_id = :org AND {OPEN_LEAD_SQL}"), {"org": org_id}
        )
        assert {row[0] for row in by_text} == open_ids
        # The claim limit's count
        assert await count_open_owned(session, owner) == len(open_ids)
        for lead in leads:
            want = lead.id if expected[lead.id] else None
            # The plpgsql dedupe function of the migration, by email and by phone
            assert await lock_and_find(run, org_id, email=lead.email, phone=None) == want, lead.email
            assert await lock_and_find(run, org_id, email=None, phone=lead.phone) == want, lead.phone
            # The full form's look-up of migration speed0009candidates, by email and by phone
            for email, phone in ((lead.email, None), (None, lead.phone)):
                form = LeadInput(source=LeadSource.web_form, email=email, phone=phone, name="N", company="C")
                assert (await look_up_many(run, [(org_id, form)]))[0][0] == want, (email, phone)
            # The ORM dedupe look-up
            found = await find_exact(session, email=lead.email, phone=None)
            assert (found.id if found else None) == want
            # The fuzzy duplicate candidates (raw SQL text)
            fuzzy = await find_fuzzy(
                run, org_id, name=lead.name, company=lead.company, threshold=100, exclude=uuid.uuid4()
            )
            assert fuzzy == want, (lead.name, lead.status)
        await session.rollback()


def test_the_partial_index_predicate_is_the_open_rule() -> None:
    from app.models.lead import OWNED_OPEN_SQL

    assert OPEN_LEAD_SQL.replace("leads.", "") == OWNED_OPEN_SQL


async def test_the_fuzzy_match_is_the_best_score_and_the_oldest_on_a_tie(state: AppState, org: Org) -> None:
    org_id = uuid.UUID(org.id)
    now = utcnow()
    async with tenant_session(state.sessions, org_id) as session:
        close = Lead(email="a@example.com", name="Wang Wei", company="Acme Labs Ltd", created_at=now)
        twin_old = Lead(
            email="b@example.com", name="Wang Wei", company="Acme Labs", created_at=now - timedelta(days=2)
        )
        twin_new = Lead(
            email="c@example.com", name="Wang Wei", company="Acme Labs", created_at=now - timedelta(days=1)
        )
        session.add_all([close, twin_old, twin_new])
        await session.commit()
    async with tenant_session(state.sessions, org_id) as session:
        run = SessionStatements(session)

        async def match(threshold: int) -> uuid.UUID | None:
            return await find_fuzzy(
                run, org_id, name="Wang Wei", company="Acme Labs", threshold=threshold, exclude=uuid.uuid4()
            )

        # Two exact matches (100): the older one, not the one that is only close (or newer).
        assert await match(90) == twin_old.id
        assert await match(100) == twin_old.id
        async with tenant_session(state.sessions, org_id) as writer:
            await writer.execute(
                text("UPDATE leads SET company = 'Acme Labs Ltd' WHERE org_id = :o AND id = ANY(:ids)"),
                {"o": org_id, "ids": [twin_old.id, twin_new.id]},
            )
            await writer.commit()
        # Nothing scores 100 any more; at 80 the best score (all three tie) goes to the oldest.
        assert await match(100) is None
        assert await match(80) == twin_old.id
