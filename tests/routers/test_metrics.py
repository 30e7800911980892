"""Metrics against an independent computation of the published definitions (DESIGN.md §7) over a
history brought in through the import API plus live changes."""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import Org, make_org
from tests.routers.metrics_reference import (
    OPEN_KEYS,
    World,
    build_world,
    fetch_all,
    fetch_deals,
    live_changes,
    local_date,
    local_start,
    money,
    rate,
    ref_cycle,
    ref_forecast,
    ref_funnel,
    ref_lead_funnel,
    ref_pipeline,
    ref_reps,
    ref_velocity,
    ref_win_rate,
)


async def metric(org: Org, path: str, key: str | None = None, **params: Any) -> dict[str, Any]:
    """GET a metric as JSON."""
    r = await org.client.get(f"/v1/metrics/{path}", params=params, headers=org.auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["definition_version"] == 1
    return dict(r.json())


def _period(today: date) -> tuple[date, date]:
    return today - timedelta(days=150), today + timedelta(days=1)


@dataclass
class History:
    """One organisation's imported history plus live changes, read back (built once per module:
    the tests below only read it, except for the targets and rates each adds for itself)."""

    world: World
    deals: list[dict[str, Any]]
    today: date


@pytest.fixture(scope="module")
async def history(state: AppState, client: httpx.AsyncClient) -> History:
    """The shared data set."""
    org = await make_org(state, client)
    world, deals, today = await _world(org)
    return History(world, deals, today)


async def _world(org: Org) -> tuple[World, list[dict[str, Any]], date]:
    world = await build_world(org)
    await live_changes(world)
    deals = await fetch_deals(org)
    from datetime import UTC, datetime

    return world, deals, local_date(datetime.now(UTC))


async def test_funnel_pipeline_win_rate_cycle_equal_the_definitions(history: History) -> None:
    world, deals, today = history.world, history.deals, history.today
    org = world.org
    start, end = _period(today)
    params = {"from": start.isoformat(), "to": end.isoformat()}

    body = await metric(org, "funnel", **params)
    assert body["filters"]["from"] == start.isoformat() and body["period"]["timezone"] == "Asia/Shanghai"
    got = [
        {
            "stage_key": r["stage_key"],
            "reached": r["reached"],
            "conversion_from_previous": r["conversion_from_previous"],
            "conversion_from_first": r["conversion_from_first"],
            "drop_off": r["drop_off"],
            "lost_here": r["lost_here"],
            "amounts": {a["currency"]: a["reached_amount"] for a in r["amounts"]},
        }
        for r in body["rows"]
    ]
    assert got == ref_funnel(world, deals, start, end)
    assert [r["stage_key"] for r in body["rows"]] == [*OPEN_KEYS, "won"]

    # Pipeline now and as of three past dates, reconstructed from history.
    from datetime import UTC, datetime

    for as_of in (None, today - timedelta(days=100), today - timedelta(days=30), today - timedelta(days=1)):
        body = await metric(org, "pipeline", **({"as_of": as_of.isoformat()} if as_of else {}))
        at = local_start(as_of + timedelta(days=1)) if as_of else datetime.now(UTC)
        got_pipeline = {
            (r["stage_key"], a["currency"]): (sum(1 for _ in [0]) and None, a["amount"], a["weighted_amount"])
            for r in body["rows"]
            for a in r["amounts"]
        }
        expected = ref_pipeline(world, deals, at)
        assert {k: v[1:] for k, v in got_pipeline.items()} == {k: v[1:] for k, v in expected.items()}, as_of
        counts = {r["stage_key"]: r["count"] for r in body["rows"]}
        expected_counts: dict[str, int] = {}
        for (stage, _), (n, _, _) in expected.items():
            expected_counts[stage] = expected_counts.get(stage, 0) + n
        assert counts == expected_counts, as_of

    body = await metric(org, "win-rate", **params)
    ref = ref_win_rate(deals, start, end)
    (row,) = body["rows"]
    assert (row["won"], row["lost"], row["win_rate"]) == (ref["won"], ref["lost"], ref["win_rate"])
    assert {a["currency"]: a["won_amount"] for a in row["amounts"] if a["won_amount"] != "0.00"} == ref[
        "won_amounts"
    ]

    body = await metric(org, "cycle", **params)
    ref = ref_cycle(world, deals, start, end)
    (row,) = body["rows"]
    assert (row["won"], row["mean_days"], row["median_days"], row["p75_days"]) == (
        ref["won"],
        ref["mean_days"],
        ref["median_days"],
        ref["p75_days"],
    )
    assert {
        s["stage_key"]: (s["stays"], s["stage_mean_days"], s["stage_median_days"])
        for s in row["time_in_stage"]
    } == ref["stages"]


async def test_lead_funnel_equals_the_definitions(history: History) -> None:
    world, deals, today = history.world, history.deals, history.today
    org = world.org
    start, end = _period(today)
    leads = await fetch_all(org, "/v1/leads")
    body = await metric(org, "lead-funnel", **{"from": start.isoformat(), "to": end.isoformat()})
    (row,) = body["rows"]
    assert {k: v for k, v in row.items() if k != "group"} == ref_lead_funnel(leads, deals, start, end)
    body = await metric(
        org, "lead-funnel", **{"from": start.isoformat(), "to": end.isoformat(), "group_by": "source"}
    )
    for row in body["rows"]:
        subset = [le for le in leads if le["source"] == row["group"]]
        assert {k: v for k, v in row.items() if k != "group"} == ref_lead_funnel(subset, deals, start, end)


def csv_rows(text: str) -> list[dict[str, str]]:
    """Parsed CSV."""
    return list(csv.DictReader(io.StringIO(text)))


async def test_forecast_velocity_and_reps_equal_the_definitions(history: History) -> None:
    world, deals, today = history.world, history.deals, history.today
    org = world.org
    start, end = _period(today)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    key_of = {v: k for k, v in world.stages.items()}
    for d in deals:
        d["stage_key"] = key_of[d["stage_id"]]
    leads = await fetch_all(org, "/v1/leads")
    # The last whole month before today's, and the one before it: both lie within the period
    # [today - 150 days, today + 1) whatever day today is (today's own month lies within it only
    # on its last day: the test passed on 30 November alone).
    month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    r = await org.client.post(
        "/v1/targets",
        json={
            "user_id": world.users["rep1"],
            "period": "month",
            "period_start": month.isoformat(),
            "amount": "5000.00",
            "currency": "USD",
        },
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    previous = (month - timedelta(days=1)).replace(day=1)
    for user, amount in (("rep1", "7000.00"), ("rep2", "3000.00")):
        r = await org.client.post(
            "/v1/targets",
            json={
                "user_id": world.users[user],
                "period": "month",
                "period_start": previous.isoformat(),
                "amount": amount,
                "currency": "USD",
            },
            headers=org.auth(),
        )
        assert r.status_code == 201, r.text

    body = await metric(org, "forecast", **params)
    got = {
        row["month"]: {
            a["currency"]: (
                a["amount"],
                a["weighted_amount"],
                a["commit_amount"],
                a["best_case_amount"],
                a["pipeline_amount"],
            )
            for a in row["amounts"]
        }
        for row in body["rows"]
    }
    assert got == ref_forecast(deals)
    assert sum(row["count"] for row in body["rows"]) == sum(1 for d in deals if d["status"] == "open")
    # Targets lying within the period: the organisation has none set, so it is every user's (USD 15,000).
    won_usd = ref_win_rate([d for d in deals if d["currency"] == "USD"], start, end)["won_amounts"].get(
        "USD", "0.00"
    )
    usd = next(a for a in body["attainment"] if a["currency"] == "USD")
    assert (usd["won_amount"], usd["target_amount"]) == (won_usd, "15000.00")
    assert usd["attainment"] == rate(Decimal(won_usd), Decimal(15000))
    # One month: only that month's targets lie within it; the team's is the sum of its members'.
    team_month = await metric(
        org,
        "forecast",
        **{"from": previous.isoformat(), "to": month.isoformat(), "team_id": world.teams["a"]},
    )
    assert {a["currency"]: a["target_amount"] for a in team_month["attainment"]}.get("USD") == "10000.00"

    body = await metric(org, "velocity", **params)
    assert {
        row["currency"]: {k: v for k, v in row.items() if k not in ("group", "currency")}
        for row in body["rows"]
    } == (ref_velocity(world, deals, start, end))

    body = await metric(org, "reps", **params)
    rows = {row["owner_id"]: row for row in body["rows"]}
    for name in ("rep1", "rep2", "rep3", "manager_a"):
        ref = ref_reps(leads, deals, start, end, world.users[name])
        row = rows[world.users[name]]
        assert {k: row[k] for k in ref if k != "won"} == {k: v for k, v in ref.items() if k != "won"}, name
        assert {a["currency"]: a["won_amount"] for a in row["amounts"] if a["won_amount"] != "0.00"} == ref[
            "won"
        ]
    rep1_usd = next(a for a in rows[world.users["rep1"]]["amounts"] if a["currency"] == "USD")
    assert rep1_usd["target_amount"] == "12000.00"
    assert rep1_usd["attainment"] == rate(Decimal(rep1_usd["won_amount"]), Decimal(12000))


async def test_csv_carries_the_json_numbers_and_filters_combine(history: History) -> None:
    world, deals, today = history.world, history.deals, history.today
    org = world.org
    start, end = _period(today)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    for path, extra in (
        ("funnel", {"group_by": "owner"}),
        ("pipeline", {}),
        ("win-rate", {"group_by": "month"}),
        ("cycle", {"group_by": "team"}),
        ("velocity", {}),
        ("forecast", {}),
        ("lead-funnel", {"group_by": "source"}),
        ("reps", {}),
        ("pipeline/trend", {"from": (today - timedelta(days=3)).isoformat()}),
    ):
        query = {**params, **extra}
        body = await metric(org, path, **query)
        r = await org.client.get(f"/v1/metrics/{path}", params={**query, "format": "csv"}, headers=org.auth())
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), path
        lines = csv_rows(r.text)
        r2 = await org.client.get(
            f"/v1/metrics/{path}", params=query, headers={**org.auth(), "Accept": "text/csv"}
        )
        assert r2.text == r.text, path
        expected = []
        for row in body["rows"]:
            scalars = {k: v for k, v in row.items() if not isinstance(v, list)}
            nested = next((v for v in row.values() if isinstance(v, list)), [])
            expected.extend([{**scalars, **item} for item in nested] or [scalars])
        assert len(lines) == len(expected), path
        for line, want in zip(lines, expected, strict=True):
            assert {k: line[k] for k in want} == {k: "" if v is None else str(v) for k, v in want.items()}, (
                path
            )

    # Filters combine: an owner and a currency, grouped by month, equal the reference on that subset.
    rep1 = world.users["rep1"]
    body = await metric(org, "win-rate", **params, owner_id=rep1, currency="USD", group_by="month")
    assert body["filters"]["owner_id"] == rep1 and body["filters"]["currency"] == "USD"
    subset = [d for d in deals if d["owner_id"] == rep1 and d["currency"] == "USD"]
    for row in body["rows"]:
        month = [d for d in subset if d["closed"] and local_date(d["closed"]).isoformat()[:7] == row["group"]]
        ref = ref_win_rate(month, start, end)
        assert (row["won"], row["lost"], row["win_rate"]) == (ref["won"], ref["lost"], ref["win_rate"])
    assert sum(row["won"] + row["lost"] for row in body["rows"]) == len(
        [d for d in subset if d["status"] in ("won", "lost") and start <= local_date(d["closed"]) < end]
    )
    # Weeks are ISO weeks of the local close date, labelled YYYY-Www.
    body = await metric(org, "win-rate", **params, group_by="week")
    weeks: dict[str, list[dict[str, Any]]] = {}
    for d in deals:
        if d["status"] in ("won", "lost") and start <= local_date(d["closed"]) < end:
            year, week, _ = local_date(d["closed"]).isocalendar()
            weeks.setdefault(f"{year}-W{week:02d}", []).append(d)
    assert {r["group"]: (r["won"], r["lost"]) for r in body["rows"]} == {
        w: (ref_win_rate(ds, start, end)["won"], ref_win_rate(ds, start, end)["lost"])
        for w, ds in weeks.items()
    }
    # A team is its members' numbers; a source is the deals whose source lead came from it.
    team_a = {world.users[n] for n in ("rep1", "rep2", "manager_a")}
    body = await metric(org, "funnel", **params, team_id=world.teams["a"])
    assert body["rows"] == (await metric(org, "funnel", **params, team_id=world.teams["a"]))["rows"]
    assert [r["reached"] for r in body["rows"]] == [
        r["reached"] for r in ref_funnel(world, [d for d in deals if d["owner_id"] in team_a], start, end)
    ]
    leads = await fetch_all(org, "/v1/leads")
    web = {le["converted_deal_id"] for le in leads if le["source"] == "web_form" and le["converted_deal_id"]}
    body = await metric(org, "funnel", **params, source="web_form")
    assert [r["reached"] for r in body["rows"]] == [
        r["reached"] for r in ref_funnel(world, [d for d in deals if d["id"] in web], start, end)
    ]
    r = await org.client.get("/v1/metrics/pipeline", params={"group_by": "month"}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "group_by"
    r = await org.client.get(
        "/v1/metrics/funnel", params={"from": "2026-05-01", "to": "2026-04-01"}, headers=org.auth()
    )
    assert r.status_code == 422


async def test_a_rep_sees_only_their_numbers_and_other_orgs_ids_give_nothing(
    history: History, other_org: Org
) -> None:
    world, deals, today = history.world, history.deals, history.today
    org = world.org
    start, end = _period(today)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    rep1 = world.users["rep1"]
    own = [d for d in deals if d["owner_id"] == rep1]
    as_rep = await metric(org, "funnel", world.keys["rep1"], **params)
    assert [r["reached"] for r in as_rep["rows"]] == [
        r["reached"] for r in ref_funnel(world, own, start, end)
    ]
    # Asking for someone else's numbers as a rep gives only the intersection: nothing.
    other = await metric(org, "win-rate", world.keys["rep1"], **params, owner_id=world.users["rep3"])
    assert other["rows"] == []
    reps = await metric(org, "reps", world.keys["rep1"], **params)
    assert [r["owner_id"] for r in reps["rows"]] == [rep1]
    manager = await metric(org, "reps", world.keys["manager_a"], **params)
    assert {r["owner_id"] for r in manager["rows"]} == {world.users[n] for n in ("rep1", "rep2", "manager_a")}
    viewer = await metric(org, "win-rate", world.keys["viewer"], **params)
    admin = await metric(org, "win-rate", **params)
    assert viewer["rows"] == admin["rows"] and admin["rows"][0]["won"] > 0
    leads = await metric(org, "lead-funnel", world.keys["rep1"], **params)
    everyone = await metric(org, "lead-funnel", **params)
    assert leads["rows"][0]["created"] < everyone["rows"][0]["created"]

    # Another organisation's ids give nothing; its own metrics are empty.
    for path, query in (
        ("win-rate", {"owner_id": rep1}),
        ("funnel", {"pipeline_id": world.pipeline_id}),
        ("pipeline", {"team_id": world.teams["a"]}),
        ("reps", {"owner_id": rep1}),
    ):
        body = await metric(other_org, path, **params, **query)
        assert body["rows"] == [], path
    assert (await metric(other_org, "lead-funnel", **params))["rows"] == []


async def test_convert_to_uses_the_dated_rates_it_names(history: History) -> None:
    world, deals, today = history.world, history.deals, history.today
    org = world.org
    start, end = _period(today)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    r = await org.client.get(
        "/v1/metrics/win-rate", params={**params, "convert_to": "USD"}, headers=org.auth()
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["missing_rate"]["from"] == "CNY" and problem["missing_rate"]["to"] == "USD"
    assert "CNY->USD" in problem["detail"] and problem["missing_rate"]["date"] in problem["detail"]
    rates = {start - timedelta(days=400): Decimal("0.1400"), today - timedelta(days=60): Decimal("0.1380")}
    for day, value in rates.items():
        r = await org.client.post(
            "/v1/exchange-rates",
            json={"date": day.isoformat(), "from": "CNY", "to": "USD", "rate": str(value)},
            headers=org.auth(),
        )
        assert r.status_code == 201, r.text
    r = await org.client.get("/v1/exchange-rates", params={"from": "CNY"}, headers=org.auth())
    assert [x["rate"] for x in r.json()["data"]] == ["0.1380000000", "0.1400000000"]

    body = await metric(org, "win-rate", **params, convert_to="USD")
    (row,) = body["rows"]
    expected = Decimal(0)
    used = set()
    for d in deals:
        if d["status"] == "won" and start <= local_date(d["closed"]) < end:
            if d["currency"] == "USD":
                expected += Decimal(d["amount"])
                continue
            day = max(k for k in rates if k <= local_date(d["closed"]))
            used.add(day.isoformat())
            expected += Decimal(d["amount"]) * rates[day]
    assert row["amounts"] == [
        {"currency": "USD", "won_amount": money(expected), "lost_amount": row["amounts"][0]["lost_amount"]}
    ]
    assert {u["date"] for u in body["rates_used"]} == used
    assert all(u["from_currency"] == "CNY" and u["to_currency"] == "USD" for u in body["rates_used"])
    # Open deals convert at the as-of date.
    as_of = today - timedelta(days=90)
    body = await metric(org, "pipeline", as_of=as_of.isoformat(), convert_to="USD")
    assert [u["date"] for u in body["rates_used"]] in ([], [(start - timedelta(days=400)).isoformat()])
    ref = ref_pipeline(world, deals, local_start(as_of + timedelta(days=1)))
    total = sum(
        (
            Decimal(amount) * (rates[start - timedelta(days=400)] if cur == "CNY" else 1)
            for (_, cur), (_, amount, _) in ref.items()
        ),
        Decimal(0),
    )
    got = sum((Decimal(a["amount"]) for row in body["rows"] for a in row["amounts"]), Decimal(0))
    assert abs(got - total) <= Decimal("0.01") * len(body["rows"])


async def test_definitions_are_published_and_timeouts_answer_503(
    org: Org, state: AppState, settings: Settings
) -> None:
    r = await org.client.get("/v1/metrics/definitions", headers=org.auth())
    assert r.status_code == 200
    body = r.json()
    names = [m["name"] for m in body["metrics"]]
    assert names[:9] == [
        "funnel",
        "pipeline",
        "pipeline_trend",
        "win_rate",
        "cycle",
        "velocity",
        "forecast",
        "lead_funnel",
        "reps",
    ]
    collections = {m["name"] for m in body["metrics"] if m["endpoint"] == "/v1/metrics/collections"}
    assert collections == {
        "collections.due",
        "collections.collected",
        "collections.collection_rate",
        "collections.overdue",
        "collections.dso",
    }
    assert body["definition_version"] == 1 and all(
        m["formula"] and m["symbols"] and m["excludes"] for m in body["metrics"]
    )
    assert any("half-up to 4 decimals" in rule for rule in body["common_rules"])

    # A query stuck behind a lock is cancelled by the statement timeout: 503 problem+json, pool intact.
    slow = settings.model_copy(update={"metrics_statement_timeout_ms": 300})
    app = create_app(slow, state=dataclasses.replace(state, settings=slow))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        async with state.engine.connect() as blocker:
            await blocker.execute(text("BEGIN"))
            await blocker.execute(text("LOCK TABLE stages IN ACCESS EXCLUSIVE MODE"))
            r = await client.get("/v1/metrics/win-rate", headers=org.auth())
            await blocker.rollback()
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "query_timeout"
        r = await client.get("/v1/metrics/win-rate", headers=org.auth())
        assert r.status_code == 200


async def test_metrics_read_through_database_read_url_when_set(org: Org, settings: Settings) -> None:
    replica = settings.model_copy(update={"database_read_url": settings.database_url})
    state = AppState.open(replica)
    try:
        assert state.read_engine is not None
        app = create_app(replica, state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            r = await client.get("/v1/metrics/win-rate", headers=org.auth())
            assert r.status_code == 200, r.text
        # The replica's pool served the metrics query (and holds its connection again).
        assert state.read_engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    finally:
        await state.close()


async def test_lead_funnel_by_intake_source(org: Org) -> None:
    sources = []
    for name in ("Contact us", "Pricing"):
        r = await org.client.post(
            "/v1/intake-sources",
            json={"kind": "form", "name": name, "field_mapping": {"your-email": "email"}},
            headers=org.auth(),
        )
        assert r.status_code == 201, r.text
        sources.append(r.json())
    for source, email in (
        (sources[0], "a@example.com"),
        (sources[0], "b@example.com"),
        (sources[1], "c@example.com"),
    ):
        r = await org.client.post(source["endpoint"], json={"your-email": email})
        assert r.status_code == 201, r.text
    r = await org.client.post("/v1/leads", json={"email": "d@example.com"}, headers=org.auth())
    assert r.status_code == 201, r.text
    body = await metric(org, "lead-funnel", group_by="intake_source")
    assert {row["group"]: row["created"] for row in body["rows"]} == {
        sources[0]["id"]: 2,
        sources[1]["id"]: 1,
        None: 1,
    }
    body = await metric(org, "lead-funnel", group_by="source")
    assert {row["group"]: row["created"] for row in body["rows"]} == {"web_form": 3, "api": 1}


async def test_trigger_kept_rollups_equal_the_deals_table(history: History, state: AppState) -> None:
    """What the rollups hold after imports, live moves, wins, losses and edits is what a GROUP BY over
    the deals table gives now."""
    org_id = history.world.org.id
    open_sql = """
        SELECT d.pipeline_id, d.stage_id, d.currency, d.owner_id, l.source, to_char(d.expected_close_date, 'YYYY-MM'),
               count(*), COALESCE(sum(d.amount), 0), COALESCE(sum(d.amount * d.probability / 100), 0)
        FROM deals d LEFT JOIN leads l ON l.id = d.lead_id
        WHERE d.org_id = :o AND d.status = 'open' GROUP BY 1, 2, 3, 4, 5, 6"""
    open_rollup = """
        SELECT pipeline_id, stage_id, currency, owner_id, source, close_month, n, amount, weighted
        FROM deal_open_rollup WHERE org_id = :o AND n <> 0"""
    closed_sql = """
        SELECT (d.closed_at AT TIME ZONE 'Asia/Shanghai')::date, d.status, d.pipeline_id, d.currency, d.owner_id,
               l.source, count(*), COALESCE(sum(d.amount), 0), count(d.amount),
               sum(EXTRACT(EPOCH FROM d.closed_at - d.created_at))
        FROM deals d LEFT JOIN leads l ON l.id = d.lead_id
        WHERE d.org_id = :o AND d.status IN ('won', 'lost') GROUP BY 1, 2, 3, 4, 5, 6"""
    closed_rollup = """
        SELECT day, status, pipeline_id, currency, owner_id, source, n, amount, amount_n, cycle_seconds
        FROM deal_closed_rollup WHERE org_id = :o AND n <> 0"""
    async with state.sessions() as session:
        for base, rollup in ((open_sql, open_rollup), (closed_sql, closed_rollup)):
            expected = sorted(map(tuple, (await session.execute(text(base), {"o": org_id})).all()), key=str)
            got = sorted(map(tuple, (await session.execute(text(rollup), {"o": org_id})).all()), key=str)
            assert got == expected and len(got) > 5
