"""What metrics read precomputed (deal_stage_stays and its per-day counts, kept by triggers on the
stage history; the funnel and lead facts) gives the same numbers as the base tables, under every
filter the endpoint accepts, after imports, live moves, re-imports that rewrite a history,
reassignments, deletes and a timezone change."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from app.services.metrics import funnel, leads, wins
from app.state import AppState
from tests.conftest import Org
from tests.routers.metrics_reference import (
    World,
    build_world,
    fetch_all,
    fetch_deals,
    live_changes,
    post_import,
)

STAYS_FROM_HISTORY = """
    SELECT h.id, h.deal_id, h.to_stage_id, h.at, h.left_at
    FROM (SELECT h.*, lead(h.at) OVER (PARTITION BY h.deal_id ORDER BY h.at, h.id) AS left_at
          FROM deal_stage_history h WHERE h.org_id = :o) h
    WHERE h.left_at IS NOT NULL"""
STAYS_TABLE = "SELECT id, deal_id, stage_id, entered_at, left_at FROM deal_stage_stays WHERE org_id = :o"


BUCKET = "loudou_duration_bucket(EXTRACT(EPOCH FROM {x})::float8)"
DURATION_DAYS_FROM_BASE = f"""
    SELECT s.stage_id, (s.left_at AT TIME ZONE COALESCE(o.settings->>'timezone', 'UTC'))::date,
           {BUCKET.format(x="s.left_at - s.entered_at")}, count(*), sum(EXTRACT(EPOCH FROM s.left_at - s.entered_at))
    FROM deal_stage_stays s JOIN organisations o ON o.id = s.org_id
    WHERE s.org_id = :o
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT NULL::uuid, (d.closed_at AT TIME ZONE COALESCE(o.settings->>'timezone', 'UTC'))::date,
           {BUCKET.format(x="d.closed_at - d.created_at")}, count(*), sum(EXTRACT(EPOCH FROM d.closed_at - d.created_at))
    FROM deals d JOIN organisations o ON o.id = d.org_id
    WHERE d.org_id = :o AND d.status = 'won' AND d.closed_at IS NOT NULL
    GROUP BY 1, 2, 3"""
DURATION_DAYS_TABLE = """
    SELECT stage_id, day, bucket, n, seconds FROM deal_duration_days
    WHERE org_id = :o AND (n <> 0 OR seconds <> 0)"""
DURATION_MONTHS_FROM_DAYS = """
    SELECT stage_id, date_trunc('month', day)::date, bucket, sum(n), sum(seconds) FROM deal_duration_days
    WHERE org_id = :o GROUP BY 1, 2, 3 HAVING sum(n) <> 0 OR sum(seconds) <> 0"""
DURATION_MONTHS_TABLE = """
    SELECT stage_id, month, bucket, n, seconds FROM deal_duration_months
    WHERE org_id = :o AND (n <> 0 OR seconds <> 0)"""
STAY_SECONDS = """
    SELECT count(*) FROM deal_stage_stays
    WHERE org_id = :o AND seconds IS DISTINCT FROM EXTRACT(EPOCH FROM left_at - entered_at)::float8"""


async def _rows(session: Any, statement: str, org_id: Any) -> list[tuple[Any, ...]]:
    return sorted(map(tuple, (await session.execute(text(statement), {"o": org_id})).all()), key=str)


async def _assert_stays_equal_history(state: AppState, org_id: Any) -> int:
    """The stays equal the history's lead(at); the duration counts per local day and month equal the
    stays' and the won deals'."""
    async with state.sessions() as session:
        expected = sorted(map(tuple, (await session.execute(text(STAYS_FROM_HISTORY), {"o": org_id})).all()))
        got = sorted(map(tuple, (await session.execute(text(STAYS_TABLE), {"o": org_id})).all()))
        assert await _rows(session, DURATION_DAYS_TABLE, org_id) == await _rows(
            session, DURATION_DAYS_FROM_BASE, org_id
        )
        assert await _rows(session, DURATION_MONTHS_TABLE, org_id) == await _rows(
            session, DURATION_MONTHS_FROM_DAYS, org_id
        )
        assert (await session.execute(text(STAY_SECONDS), {"o": org_id})).scalar_one() == 0
    assert got == expected
    return len(got)


async def _cycle(org: Org, key: str | None, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cycle answer from the stays table, and from the stage history; both must be equal."""
    answers = []
    for use_table in (True, False):
        monkeypatch.setattr(wins, "USE_STAYS_TABLE", use_table)
        r = await org.client.get("/v1/metrics/cycle", params=params, headers=org.auth(key))
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert answers[0] == answers[1], params
    return answers[0]


async def _funnel(org: Org, key: str | None, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The funnel from deal_funnel_facts, and from the deals and their history; both must be equal."""
    answers = []
    for use_table in (True, False):
        monkeypatch.setattr(funnel, "USE_FACTS_TABLE", use_table)
        r = await org.client.get("/v1/metrics/funnel", params=params, headers=org.auth(key))
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert answers[0] == answers[1], params
    return answers[0]


async def _lead_funnel(
    org: Org, key: str | None, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The lead funnel (and reps' lead counts) from lead_funnel_facts, and from the leads and their
    deals; both must be equal."""
    for path in ("reps", "lead-funnel"):
        answers = []
        for use_table in (True, False):
            monkeypatch.setattr(leads, "USE_FACTS_TABLE", use_table)
            query = {k: v for k, v in params.items() if path == "lead-funnel" or k != "group_by"}
            r = await org.client.get(f"/v1/metrics/{path}", params=query, headers=org.auth(key))
            assert r.status_code == 200, r.text
            answers.append(r.json())
        assert answers[0] == answers[1], (path, params)
    return answers[0]


LEAD_FACTS_FROM_BASE = """
    SELECT le.id, le.created_at, le.owner_id, le.source, le.source_id, le.status, le.first_contacted_at,
           le.converted_deal_id, le.duplicate_of, le.deleted_at, COALESCE(cd.status = 'won', false)
    FROM leads le LEFT JOIN deals cd ON cd.org_id = le.org_id AND cd.id = le.converted_deal_id
    WHERE le.org_id = :o"""
LEAD_FACTS_TABLE = """
    SELECT id, created_at, owner_id, source, source_id, status, first_contacted_at, converted_deal_id,
           duplicate_of, deleted_at, won
    FROM lead_funnel_facts WHERE org_id = :o"""


FACTS_FROM_BASE = """
    SELECT d.id, d.pipeline_id, d.lead_id, d.owner_id, d.currency, d.amount, d.status, d.created_at,
           d.closed_at,
           COALESCE((SELECT array_agg(DISTINCT h.to_stage_id ORDER BY h.to_stage_id) FROM deal_stage_history h
                     WHERE h.org_id = d.org_id AND h.deal_id = d.id), '{}'),
           (SELECT h.from_stage_id FROM deal_stage_history h
            WHERE d.status = 'lost' AND h.org_id = d.org_id AND h.deal_id = d.id
              AND h.at = d.stage_entered_at AND h.to_stage_id = d.stage_id)
    FROM deals d WHERE d.org_id = :o"""
FACTS_TABLE = """
    SELECT id, pipeline_id, lead_id, owner_id, currency, amount, status, created_at, closed_at, reached, last_open
    FROM deal_funnel_facts WHERE org_id = :o"""


async def _assert_facts_equal_base(state: AppState, org_id: Any) -> int:
    async with state.sessions() as session:
        expected = sorted(
            map(tuple, (await session.execute(text(FACTS_FROM_BASE), {"o": org_id})).all()), key=str
        )
        got = sorted(map(tuple, (await session.execute(text(FACTS_TABLE), {"o": org_id})).all()), key=str)
    assert got == expected
    return len(got)


async def _filter_combinations(world: World, today: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """Cycle under many filter combinations and callers, table vs history; returns the stays seen."""
    org = world.org
    periods = [
        {},
        {"from": (today - timedelta(days=150)).isoformat(), "to": (today + timedelta(days=1)).isoformat()},
        {"from": (today - timedelta(days=60)).isoformat(), "to": (today - timedelta(days=10)).isoformat()},
    ]
    filters: list[dict[str, Any]] = [
        {},
        {"pipeline_id": world.pipeline_id},
        {"owner_id": world.users["rep1"]},
        {"team_id": world.teams["a"]},
        {"source": "web_form"},
        {"currency": "USD"},
        {"currency": "CNY", "team_id": world.teams["b"]},
    ]
    groups: list[dict[str, Any]] = [
        {},
        *({"group_by": g} for g in ("owner", "team", "source", "month", "week")),
    ]
    seen = 0
    for period, flt, group in itertools.product(periods, filters, groups):
        body = await _cycle(org, None, {**period, **flt, **group}, monkeypatch)
        seen += sum(t["stays"] for row in body["rows"] for t in row["time_in_stage"])
        body = await _funnel(org, None, {**period, **flt, **group}, monkeypatch)
        seen += sum(row["reached"] for row in body["rows"])
        if "pipeline_id" not in flt and "currency" not in flt:
            lead_groups = [group] if group else [{}, {"group_by": "intake_source"}]
            for lead_group in lead_groups:
                body = await _lead_funnel(org, None, {**period, **flt, **lead_group}, monkeypatch)
                seen += sum(row["created"] for row in body["rows"])
    for period in periods:
        for group in ({}, {"group_by": "month"}, {"group_by": "owner"}):
            await _funnel(org, None, {**period, **group, "convert_to": "CNY"}, monkeypatch)
    for name in ("rep1", "manager_a", "viewer"):
        for group in ({}, {"group_by": "owner"}, {"group_by": "month"}):
            await _cycle(org, world.keys[name], {**periods[1], **group}, monkeypatch)
            await _funnel(org, world.keys[name], {**periods[1], **group}, monkeypatch)
            await _lead_funnel(org, world.keys[name], {**periods[1], **group}, monkeypatch)
    return seen


async def test_stays_table_equals_the_stage_history_under_filters_and_changes(
    org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await build_world(org, deals=40, leads=30, seed=5)
    await live_changes(world)
    today = datetime.now(UTC).date()
    for currency in ("USD", "EUR", "JPY", "GBP"):
        r = await org.client.post(
            "/v1/exchange-rates",
            json={"date": "2000-01-01", "from": currency, "to": "CNY", "rate": "7.1234"},
            headers=org.auth(),
        )
        assert r.status_code in (200, 201), r.text
    assert await _assert_stays_equal_history(state, org.id) > 40
    assert await _assert_facts_equal_base(state, org.id) > 40
    assert await _filter_combinations(world, today, monkeypatch) > 0

    deals = await fetch_deals(org)
    open_deal = next(d for d in deals if d["status"] == "open" and d["stage_id"] == world.stages["prospect"])
    # A live move, a loss, a reopen and a reassignment.
    r = await org.client.post(
        f"/v1/deals/{open_deal['id']}/move",
        json={"stage_id": world.stages["first_contact"]},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    await _assert_stays_equal_history(state, org.id)
    r = await org.client.post(
        f"/v1/deals/{open_deal['id']}/lost", json={"reason": "price"}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    await _assert_stays_equal_history(state, org.id)
    r = await org.client.post(f"/v1/deals/{open_deal['id']}/reopen", json={}, headers=org.auth())
    assert r.status_code == 200, r.text
    await _assert_stays_equal_history(state, org.id)
    moved = next(d for d in deals if d["status"] != "open" and d["owner_id"] == world.users["rep1"])
    r = await org.client.patch(
        f"/v1/deals/{moved['id']}", json={"owner_id": world.users["rep3"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    # A re-import that rewrites a deal's history (one stage fewer, times shifted).
    line = next(x for x in world.deal_lines if len(x["stage_history"]) >= 3)
    changed = {**line, "stage_history": [line["stage_history"][0], *line["stage_history"][2:]]}
    report = await post_import(org, "deals", [changed])
    assert report["updated"] == 1, report
    await _assert_stays_equal_history(state, org.id)
    # Leads: a reassignment, a delete, a merge into another; the deal a lead converted to is lost,
    # another such deal deleted.
    leads_now = await fetch_all(org, "/v1/leads")
    converted = [le for le in leads_now if le.get("converted_deal_id")]
    plain = [le for le in leads_now if not le.get("converted_deal_id")]
    r = await org.client.post(
        f"/v1/leads/{plain[0]['id']}/assign", json={"owner_id": world.users["rep2"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    r = await org.client.delete(f"/v1/leads/{plain[1]['id']}", headers=org.auth())
    assert r.status_code == 200, r.text
    r = await org.client.post(
        f"/v1/leads/{plain[3]['id']}/merge", json={"duplicate_id": plain[2]["id"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    by_id = {d["id"]: d for d in deals}
    open_converted = [
        le for le in converted if by_id.get(le["converted_deal_id"], {}).get("status") == "open"
    ]
    if open_converted:
        r = await org.client.post(
            f"/v1/deals/{open_converted[0]['converted_deal_id']}/lost",
            json={"reason": "price"},
            headers=org.auth(),
        )
        assert r.status_code == 200, r.text
    won_converted = [le for le in converted if by_id.get(le["converted_deal_id"], {}).get("status") == "won"]
    assert won_converted
    r = await org.client.delete(f"/v1/deals/{won_converted[0]['converted_deal_id']}", headers=org.auth())
    assert r.status_code == 200, r.text
    await _assert_stays_equal_history(state, org.id)
    # Deletes.
    for gone in [d for d in deals if d["status"] == "lost"][:2]:
        r = await org.client.delete(f"/v1/deals/{gone['id']}", headers=org.auth())
        assert r.status_code == 200, r.text
    # A new imported deal with a long history.
    created = datetime.now(UTC) - timedelta(days=40)
    report = await post_import(
        org,
        "deals",
        [
            {
                "external_id": "stays-new",
                "name": "Deal stays",
                "currency": "USD",
                "amount": "10.00",
                "created_at": created.isoformat(),
                "status": "won",
                "closed_at": (created + timedelta(days=30)).isoformat(),
                "stage_history": [
                    {"stage": key, "entered_at": (created + timedelta(days=i * 5)).isoformat()}
                    for i, key in enumerate(
                        ["prospect", "first_contact", "quote", "first_contact", "negotiation"]
                    )
                ],
            }
        ],
    )
    assert report["created"] == 1, report
    await _assert_stays_equal_history(state, org.id)
    await _assert_facts_equal_base(state, org.id)
    assert await _filter_combinations(world, today, monkeypatch) > 0
    # A timezone change moves deals across local days: the per-day funnel rollup is rebuilt.
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"timezone": "America/Los_Angeles"}}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    await _assert_facts_equal_base(state, org.id)
    await _assert_stays_equal_history(state, org.id)
    for params in ({}, {"group_by": "week"}, {"from": (today - timedelta(days=90)).isoformat()}):
        await _funnel(org, None, params, monkeypatch)
        await _cycle(org, None, params, monkeypatch)
