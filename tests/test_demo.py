"""`loudou demo`: an organisation filled through the API. Every metrics and collections endpoint then
answers non-empty, plausible numbers, and the same seed gives the same counts (rows and metrics)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app import demo_history
from app.config import Settings
from app.demo import TIMEZONE, DemoResult, load_demo
from app.main import create_app
from app.state import AppState
from tests.conftest import Servers, fresh_database

MONTHS = 2
SEED = 7


@pytest.fixture(scope="module")
async def demo_settings(settings: Settings, servers: Servers) -> AsyncIterator[Settings]:
    """A database of the module's own, which the session's worker does not serve: the demo runs
    the worker's jobs itself, and a second worker taking some of them (its webhook attempts
    cannot reach the demo's in-process receiver) would make the counts differ between runs."""
    async with fresh_database(servers) as database_url:
        yield settings.model_copy(update={"database_url": database_url})


@pytest.fixture(scope="module")
async def client(demo_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the module's database."""
    state = AppState.open(demo_settings)
    try:
        app = create_app(demo_settings, state=state)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            yield c
    finally:
        await state.close()


@pytest.fixture(scope="module")
async def demos(demo_settings: Settings) -> tuple[DemoResult, DemoResult]:
    """The same seed twice, into two new organisations."""
    first = await load_demo(demo_settings, name=f"Demo {uuid.uuid4().hex[:6]}", seed=SEED, months=MONTHS)
    second = await load_demo(demo_settings, name=f"Demo {uuid.uuid4().hex[:6]}", seed=SEED, months=MONTHS)
    return first, second


@pytest.fixture(scope="module")
def demo(demos: tuple[DemoResult, DemoResult]) -> DemoResult:
    return demos[0]


def _today() -> date:
    return datetime.now(zoneinfo.ZoneInfo(TIMEZONE)).date()


async def _get(client: httpx.AsyncClient, result: DemoResult, path: str, **params: Any) -> Any:
    r = await client.get(path, params=params, headers={"Authorization": f"Bearer {result.api_key}"})
    assert r.status_code == 200, f"{path} {params}: {r.status_code} {r.text[:500]}"
    return r.json()


async def _all(
    client: httpx.AsyncClient, result: DemoResult, path: str, **params: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await _get(client, result, path, limit=200, **params, **({"cursor": cursor} if cursor else {}))
        rows.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return rows


async def _signature(client: httpx.AsyncClient, result: DemoResult) -> dict[str, Any]:
    """The counts (and the money of the collections) every metrics endpoint reports."""
    today = _today()
    past = today - timedelta(days=20)
    period = {
        "from": (today - timedelta(days=MONTHS * 31)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
    }
    funnel = await _get(client, result, "/v1/metrics/funnel")
    pipeline = await _get(client, result, "/v1/metrics/pipeline")
    as_of = await _get(client, result, "/v1/metrics/pipeline", as_of=past.isoformat())
    trend = await _get(client, result, "/v1/metrics/pipeline/trend", interval="week")
    win = await _get(client, result, "/v1/metrics/win-rate", group_by="month")
    cycle = await _get(client, result, "/v1/metrics/cycle")
    velocity = await _get(client, result, "/v1/metrics/velocity")
    forecast = await _get(client, result, "/v1/metrics/forecast")
    leads = await _get(client, result, "/v1/metrics/lead-funnel", group_by="source")
    reps = await _get(client, result, "/v1/metrics/reps")
    collections = await _get(client, result, "/v1/metrics/collections", **period, group_by="month")
    aging = await _get(client, result, "/v1/receivables/aging", group_by="account")
    risks = await _get(client, result, "/v1/receivables/risks")
    return {
        "funnel": [(r["stage_key"], r["reached"], r["lost_here"]) for r in funnel["rows"]],
        "pipeline": [(r["stage_key"], r["count"]) for r in pipeline["rows"]],
        "pipeline_as_of": [(r["stage_key"], r["count"]) for r in as_of["rows"]],
        "trend": [(r["date"], r["stage_key"], r["count"]) for r in trend["rows"]],
        "win_rate": [(r["group"], r["won"], r["lost"]) for r in win["rows"]],
        "cycle": [
            (r["won"], [(s["stage_key"], s["stays"]) for s in r["time_in_stage"]]) for r in cycle["rows"]
        ],
        "velocity": [(r["currency"], r["open_deals"], r["won"], r["lost"]) for r in velocity["rows"]],
        "forecast": [(r["month"], r["count"]) for r in forecast["rows"]],
        "lead_funnel": [
            (r["group"], r["created"], r["contacted"], r["qualified"], r["converted"], r["won"])
            for r in leads["rows"]
        ],
        "reps": sorted(
            (r["owner_name"], r["leads_created"], r["leads_contacted"], r["leads_converted"], r["deals_won"])
            for r in reps["rows"]
        ),
        "collections": [
            (r["currency"], r["due"], r["collected"], r["overdue"]) for r in collections["totals"]
        ],
        "collections_months": len(collections["rows"]),
        "aging": [(r["currency"], r["buckets"]) for r in aging["totals"]],
        "aging_accounts": len(aging["rows"]),
        "risks": sorted((r["subject"], [c["code"] for c in r["reasons"]]) for r in risks["data"]),
    }


async def test_the_same_seed_gives_the_same_rows_and_the_same_metric_counts(
    demos: tuple[DemoResult, DemoResult], client: httpx.AsyncClient
) -> None:
    first, second = demos
    assert first.org_id != second.org_id
    assert first.counts == second.counts
    assert await _signature(client, first) == await _signature(client, second)
    counts = first.counts
    live_leads = MONTHS * 12
    history_deals = demo_history.DEALS_PER_MONTH * MONTHS
    live_deals = -(-live_leads // 3)  # a third of the live leads are converted
    assert counts["users"] == 7 and counts["teams"] == 2
    assert counts["leads"] == live_leads + history_deals + demo_history.LEADS_PER_MONTH * MONTHS
    assert counts["deals"] == live_deals + history_deals
    assert counts["contacts"] == live_deals  # history deals come with an account, not a contact
    assert counts["accounts"] == live_deals + len(demo_history.account_names(MONTHS))
    for entity in (
        "activities",
        "deal_stage_history",
        "deal_field_history",
        "quotes",
        "quote_lines",
        "orders",
    ):
        assert counts[entity] > 0, entity
    assert counts["payments_confirmed"] > 0
    assert counts["payments_reversed"] == 1 and counts["payments_pending_confirmation"] == 1
    assert counts["installments_overdue"] > 0
    assert counts["targets"] > 0 and counts["exchange_rates"] > 0 and counts["dunning_policies"] == 1
    assert counts["dunning_fired"] > 0 and counts["outbound_messages"] > 0 and counts["risks"] > 0
    assert counts["webhook_deliveries_succeeded"] > 0 and counts["webhook_deliveries_failed"] > 0


async def test_every_funnel_metric_has_plausible_numbers(demo: DemoResult, client: httpx.AsyncClient) -> None:
    definitions = await _get(client, demo, "/v1/metrics/definitions")
    names = {d["name"] for d in definitions["metrics"]}
    assert {"collections.dso", "collections.collection_rate"} <= names and len(names) > 8

    funnel = (await _get(client, demo, "/v1/metrics/funnel"))["rows"]
    reached = [r["reached"] for r in funnel]
    assert reached[0] > 0 and reached == sorted(reached, reverse=True), reached
    assert funnel[-1]["stage_key"] == "won" and 0 < funnel[-1]["reached"] < reached[0]
    assert sum(r["lost_here"] or 0 for r in funnel) > 0
    assert all(0 <= (r["conversion_from_first"] or 0) <= 1 for r in funnel)

    now = (await _get(client, demo, "/v1/metrics/pipeline"))["rows"]
    assert sum(r["count"] for r in now) > 0
    for row in now:
        for amount in row["amounts"]:
            assert Decimal(amount["amount"]) > 0
            assert 0 <= Decimal(amount["weighted_amount"]) <= Decimal(amount["amount"])
    # The past, reconstructed from history, and the daily snapshots the demo took, agree.
    day = _today() - timedelta(days=20)
    as_of = (await _get(client, demo, "/v1/metrics/pipeline", as_of=day.isoformat()))["rows"]
    assert sum(r["count"] for r in as_of) > 0
    trend = await _get(
        client,
        demo,
        "/v1/metrics/pipeline/trend",
        **{"from": (day - timedelta(days=13)).isoformat(), "to": (day + timedelta(days=1)).isoformat()},
    )
    points = {r["date"] for r in trend["rows"]}
    assert len(points) >= 10
    on_day = [(r["stage_key"], r["count"]) for r in trend["rows"] if r["date"] == day.isoformat()]
    assert on_day == [(r["stage_key"], r["count"]) for r in as_of]
    assert (await _get(client, demo, "/v1/metrics/pipeline/trend", interval="month"))["rows"]

    win = (await _get(client, demo, "/v1/metrics/win-rate"))["rows"][0]
    assert win["won"] > 0 and win["lost"] > 0 and 0 < win["win_rate"] < 1
    by_month = (await _get(client, demo, "/v1/metrics/win-rate", group_by="month"))["rows"]
    assert len(by_month) >= MONTHS

    cycle = (await _get(client, demo, "/v1/metrics/cycle"))["rows"][0]
    assert cycle["won"] > 0 and cycle["mean_days"] > 1 and cycle["median_days"] > 1 and cycle["p75_days"] > 1
    assert {s["stage_key"] for s in cycle["time_in_stage"]} >= set(demo_history.OPEN_STAGES)

    velocity = {r["currency"]: r for r in (await _get(client, demo, "/v1/metrics/velocity"))["rows"]}
    assert velocity["CNY"]["open_deals"] > 0 and Decimal(velocity["CNY"]["velocity_per_day"]) > 0

    forecast = await _get(client, demo, "/v1/metrics/forecast")
    assert sum(r["count"] for r in forecast["rows"]) > 0
    attainment = {a["currency"]: a for a in forecast["attainment"]}["CNY"]
    assert Decimal(attainment["target_amount"]) > 0 and Decimal(attainment["won_amount"]) > 0
    assert attainment["attainment"] > 0

    leads = (await _get(client, demo, "/v1/metrics/lead-funnel"))["rows"][0]
    assert leads["created"] > leads["contacted"] > 0
    assert leads["qualified"] >= leads["converted"] > leads["won"] > 0
    assert leads["speed_to_lead_median_minutes"] > 0 and leads["speed_to_lead_p90_minutes"] > 0
    by_source = (await _get(client, demo, "/v1/metrics/lead-funnel", group_by="source"))["rows"]
    assert {r["group"] for r in by_source} >= {"web_form", "email", "webhook", "api", "import"}

    reps = [r for r in (await _get(client, demo, "/v1/metrics/reps"))["rows"] if r["leads_created"]]
    assert len(reps) == 4
    assert sum(r["deals_won"] for r in reps) > 0
    assert all(Decimal(a["target_amount"]) > 0 for r in reps for a in r["amounts"] if a["currency"] == "CNY")
    assert any(a["attainment"] for r in reps for a in r["amounts"])

    converted = await _get(client, demo, "/v1/metrics/win-rate", convert_to="CNY")
    assert converted["rates_used"] and converted["rows"][0]["amounts"][0]["currency"] == "CNY"


async def test_every_collections_endpoint_has_plausible_numbers(
    demo: DemoResult, client: httpx.AsyncClient
) -> None:
    today = _today()
    period = {
        "from": (today - timedelta(days=MONTHS * 31)).isoformat(),
        "to": (today + timedelta(days=1)).isoformat(),
    }
    collections = await _get(client, demo, "/v1/metrics/collections", **period)
    cny = {r["currency"]: r for r in collections["totals"]}["CNY"]
    assert Decimal(cny["due"]) > 0 and Decimal(cny["collected"]) > 0 and Decimal(cny["overdue"]) > 0
    assert 0 < Decimal(cny["collection_rate"]) < 1 and Decimal(cny["dso_days"]) > 0
    by_month = await _get(client, demo, "/v1/metrics/collections", **period, group_by="month")
    assert len({r["group_id"] for r in by_month["rows"]}) >= 2

    aging = await _get(client, demo, "/v1/receivables/aging", group_by="account")
    assert aging["rows"]
    buckets = {r["currency"]: r["buckets"] for r in aging["totals"]}["CNY"]
    assert sum(Decimal(v) for k, v in buckets.items() if k != "current") > 0
    assert Decimal(buckets["current"]) > 0
    earlier = await _get(
        client, demo, "/v1/receivables/aging", as_of=(today - timedelta(days=25)).isoformat()
    )
    assert earlier["totals"] and Decimal(earlier["totals"][0]["total"]) > 0

    risks = (await _get(client, demo, "/v1/receivables/risks"))["data"]
    assert any(c["code"] == "overdue_days" for r in risks for c in r["reasons"])

    payments = await _all(client, demo, "/v1/payments")
    reversed_ = [p for p in payments if p["status"] == "reversed"]
    assert len(reversed_) == 1 and reversed_[0]["reversed_on"] and reversed_[0]["reversal_reason"]
    assert any(p["status"] == "pending_confirmation" for p in payments)
    late = [p for p in payments if p["status"] == "confirmed"]
    assert late
    ahead = next(p for p in payments if Decimal(p["unallocated"]) > 0)
    balance = await _get(client, demo, f"/v1/accounts/{ahead['account_id']}/credit/balance")
    assert balance

    installments = await _all(client, demo, "/v1/installments")
    statuses = {i["status"] for i in installments}
    assert {"paid", "overdue", "scheduled"} <= statuses, statuses
    overdue = [i for i in installments if i["status"] == "overdue"]
    logs = [row for i in overdue for row in await _get(client, demo, f"/v1/installments/{i['id']}/dunning")]
    assert {row["action"] for row in logs if row["outcome"] == "fired"} >= {"email", "owner_task"}
    assert any(row["outcome"] == "skipped" for row in logs)  # superseded or paused by a promise

    messages = await _all(client, demo, "/v1/outbound-messages")
    assert messages and all(m["state"] == "handed_off" for m in messages)
    assert {m["language"] for m in messages} == {"zh", "en"}

    accounts = [a for a in await _all(client, demo, "/v1/accounts") if a.get("credit_limit")]
    assert accounts
    credit = await _get(client, demo, f"/v1/accounts/{accounts[0]['id']}/credit")
    assert credit["rating"] and credit["factors"]

    orders = await _all(client, demo, "/v1/orders")
    assert any(date.fromisoformat(o["ordered_at"][:10]) < today - timedelta(days=20) for o in orders)
    policies = await _get(client, demo, "/v1/dunning-policies")
    assert [len(p["steps"]) for p in policies if p["is_default"]] == [5]

    targets = await _all(client, demo, "/v1/targets")
    assert {t["period"] for t in targets} == {"month", "quarter"}
    assert any(t["team_id"] for t in targets) and any(t["user_id"] for t in targets)


async def test_webhooks_were_delivered_by_the_real_machinery(
    demo: DemoResult, client: httpx.AsyncClient
) -> None:
    subs = {s["url"].rsplit("/", 1)[1]: s for s in await _all(client, demo, "/v1/webhook-subscriptions")}
    erp = await _all(client, demo, f"/v1/webhook-subscriptions/{subs['erp']['id']}/deliveries")
    assert erp and all(d["status"] == "succeeded" for d in erp)
    assert all([a["status_code"] for a in d["attempt_log"]] == [204] for d in erp)  # the signature verified
    assert {"dunning.message", "payment.confirmed", "payment.reversed"} <= {d["event_type"] for d in erp}
    legacy = await _all(client, demo, f"/v1/webhook-subscriptions/{subs['legacy-bi']['id']}/deliveries")
    assert legacy and all(d["status"] == "failed" for d in legacy)
    assert [a["status_code"] for d in legacy for a in d["attempt_log"]] == [410]
    assert subs["legacy-bi"]["active"] is False and "410" in subs["legacy-bi"]["disabled_reason"]
    assert subs["erp"]["active"] is False  # nothing answers there once the demo has finished


async def test_the_command_prints_only_the_json_and_the_key_works(
    demo_settings: Settings, client: httpx.AsyncClient
) -> None:
    settings = demo_settings
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or ""}
    loudou = str(Path(sys.executable).parent / "loudou")
    done = await asyncio.to_thread(
        subprocess.run,
        [loudou, "demo", "--org", "Demo CLI", "--seed", "3", "--months", "1", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)  # nothing else on stdout: logs go to stderr
    assert set(out) == {"org_id", "api_key"}
    result = DemoResult(org_id=out["org_id"], api_key=out["api_key"])
    me = await _get(client, result, "/v1/me")
    assert me["organisation"]["id"] == out["org_id"] and me["organisation"]["name"] == "Demo CLI"
    win = (await _get(client, result, "/v1/metrics/win-rate"))["rows"][0]
    assert win["won"] + win["lost"] > 0
