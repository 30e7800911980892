"""Metrics against an independent computation of the published definitions (DESIGN.md §7) over a
history brought in through the import API plus live changes."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

from tests.conftest import Org
from tests.routers.metrics_reference import (
    OPEN_KEYS,
    World,
    build_world,
    fetch_all,
    fetch_deals,
    live_changes,
    local_date,
    local_start,
    ref_cycle,
    ref_funnel,
    ref_lead_funnel,
    ref_pipeline,
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


async def _world(org: Org) -> tuple[World, list[dict[str, Any]], date]:
    world = await build_world(org)
    await live_changes(world)
    deals = await fetch_deals(org)
    from datetime import UTC, datetime

    return world, deals, local_date(datetime.now(UTC))


async def test_funnel_pipeline_win_rate_cycle_equal_the_definitions(org: Org) -> None:
    world, deals, today = await _world(org)
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


async def test_lead_funnel_equals_the_definitions(org: Org) -> None:
    world, deals, today = await _world(org)
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
