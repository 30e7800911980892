"""The fuzzy-duplicate keys (`loudou_name_key`, `loudou_company_key`, migrations speed0001fuzz and
speed0005inline): PostgreSQL expands them into their expressions instead of calling them, they
answer as written, and the candidate look-up still reads its two indexes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from app.services.leads.ingest import _FUZZY_CANDIDATES
from app.state import AppState


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


async def test_the_candidate_look_up_reads_both_key_indexes(state: AppState) -> None:
    sql = str(_FUZZY_CANDIDATES)
    params = {"org": uuid.uuid4(), "exclude": uuid.uuid4(), "company": "Acme Ltd", "name": "Li Wei"}
    plan = await _explain(state, sql, params)
    assert "ix_leads_fuzzy_company" in plan, plan
    assert "ix_leads_fuzzy_name" in plan, plan
