"""The fuzzy-duplicate keys (`loudou_name_key`, `loudou_company_key`, migrations speed0001fuzz and
speed0005inline): PostgreSQL expands them into their expressions instead of calling them, they
answer as written, and the candidate look-up still reads its two indexes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from app.db import tenant_session
from app.models.base import utcnow
from app.models.lead import Lead, LeadStatus
from app.services.leads.ingest import _FUZZY_CANDIDATES
from app.state import AppState
from tests.conftest import Org


async def _explain(state: AppState, sql: str, params: dict[str, object] | None = None) -> str:
    async with state.sessions() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))  # an empty test table is no guide
        rows = await session.execute(
            text("EXPLAIN VERBOSE " + sql).execution_options(cross_tenant=True), params
        )
        plan = "\n".join(str(r[0]) for r in rows)
        await session.rollback()
    return plan


async def test_both_keys_are_expanded_not_called(state: AppState) -> None:
    """A SQL function PostgreSQL cannot inline is parsed and planned afresh by every statement that
    evaluates it: each INSERT into leads (two expression indexes and their predicates) paid that.
    The argument is not a constant, so the plan shows the call or its expansion, not a folded value."""
    plan = await _explain(
        state, "SELECT loudou_name_key(v), loudou_company_key(v) FROM (SELECT md5(random()::text) AS v) AS s"
    )
    assert "loudou_" not in plan, plan
    assert "regexp_replace" in plan, plan


@pytest.mark.parametrize(
    ("value", "name_key", "company_key"),
    [
        (None, None, None),
        ("", None, None),
        ("  ·、 ", None, None),
        ("ACME Corp.", "acme corp", "acme"),
        ("Acme  Corporation", "acme corporation", "acme"),
        ("  Li   Wei!", "li wei", "li wei"),
        ("北京星辰科技有限公司", "北京星辰科技有限公司", "北京星辰科技"),
        ("Müller GmbH", "müller gmbh", "müller"),
    ],
)
async def test_the_keys_answer_as_written(
    state: AppState, value: str | None, name_key: str | None, company_key: str | None
) -> None:
    async with state.sessions() as session:
        row = (
            await session.execute(
                text("SELECT loudou_name_key(CAST(:v AS text)), loudou_company_key(CAST(:v AS text))"),
                {"v": value},
            )
        ).one()
    assert tuple(row) == (name_key, company_key)


# 3,000 open leads of one organisation over 600 companies and 1,500 names, inserted and analysed
# inside the test's transaction and rolled back with it (ANALYZE is transactional): on a table of
# a few test rows every org_id-leading index costs the same, and the planner may take any.
_SOME_LEADS = """
INSERT INTO leads (org_id, id, version, created_at, updated_at, status, source, source_detail,
                   attributes, tags, score, score_breakdown, pooled, touch_count, name, company, email)
SELECT CAST(:org AS uuid), gen_random_uuid(), 1, now() - i * interval '1 minute', now(), 'new', 'form',
       '{}', '{}', '[]', 0, '{}', true, 1, 'Person ' || (i % 1500), 'Company ' || (i % 600) || ' Ltd',
       'p' || i || '@example.com'
FROM generate_series(1, 3000) AS i
"""


async def test_the_candidate_look_up_has_one_generic_plan_reading_both_key_indexes(
    state: AppState, org: Org
) -> None:
    """The look-up runs in `loudou_fuzzy_candidates` with plan_cache_mode = force_generic_plan
    (migration speed0006generic): planned once per connection, and that one plan reads the two
    key indexes, whatever the values. Checked on the function's own body, prepared here."""
    async with state.sessions() as session:
        body, config = (
            await session.execute(
                text("SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'loudou_fuzzy_candidates'")
            )
        ).one()
        lock_config = (
            await session.execute(
                text("SELECT proconfig FROM pg_proc WHERE proname = 'loudou_lock_open_lead'")
            )
        ).scalar_one()
        query = body[body.index("SELECT") : body.rindex(";")].replace("INTO ids, labels", "")
        for name, number in (("p_org", 1), ("p_company", 2), ("p_name", 3), ("p_exclude", 4)):
            query = query.replace(name, f"${number}")
        await session.execute(text(_SOME_LEADS).execution_options(cross_tenant=True), {"org": org.id})
        await session.execute(text("ANALYZE leads"))
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        conn = await session.connection()
        await conn.exec_driver_sql(f"PREPARE fuzzy_candidates (uuid, text, text, uuid) AS {query}")
        rows = await conn.exec_driver_sql(
            f"EXPLAIN EXECUTE fuzzy_candidates ('{org.id}', 'Company 7 Ltd', 'Person 7', '{uuid.uuid4()}')"
        )
        plan = "\n".join(str(r[0]) for r in rows)
        await conn.exec_driver_sql("DEALLOCATE fuzzy_candidates")  # not undone by the rollback
        await session.rollback()
    assert config == ["plan_cache_mode=force_generic_plan"]
    assert lock_config == ["plan_cache_mode=force_generic_plan"]
    assert "$1" in plan, plan  # the generic plan
    assert "ix_leads_fuzzy_company" in plan, plan
    assert "ix_leads_fuzzy_name" in plan, plan


async def test_the_look_up_finds_candidates_by_either_key_oldest_first(state: AppState, org: Org) -> None:
    org_id = uuid.UUID(org.id)
    async with tenant_session(state.sessions, org_id) as session:
        leads = [
            Lead(name="Wang Fang", company="ACME Corp.", email="a@example.com"),
            Lead(name="li  wei", company="Other Co", email="b@example.com"),
            Lead(name="Zhao Lei", company="Unrelated", email="c@example.com"),
            Lead(
                name="Sun Li",
                company="Acme Corporation",
                email="d@example.com",
                status=LeadStatus.unqualified,
            ),
        ]
        for i, lead in enumerate(leads):
            lead.created_at = utcnow() - timedelta(minutes=10 - i)
            session.add(lead)
        await session.commit()
        exclude = uuid.uuid4()
        ids, labels = (
            await session.execute(
                _FUZZY_CANDIDATES,
                {"org": org_id, "company": "Acme Ltd", "name": "Li Wei", "exclude": exclude},
            )
        ).one()
        assert ids == [leads[0].id, leads[1].id]
        assert labels == ["Wang Fang ACME Corp.", "li  wei Other Co"]
        ids, _ = (
            await session.execute(
                _FUZZY_CANDIDATES,
                {"org": org_id, "company": "Acme Ltd", "name": "Li Wei", "exclude": leads[0].id},
            )
        ).one()
        assert ids == [leads[1].id]
        other = (
            await session.execute(
                _FUZZY_CANDIDATES,
                {"org": uuid.uuid4(), "company": "Acme", "name": "Li Wei", "exclude": exclude},
            )
        ).one()
        assert tuple(other) == (None, None)
