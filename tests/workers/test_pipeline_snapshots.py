"""Daily pipeline snapshots (arq cron) and the trend read from them agree with the as-of
reconstruction for every day of a 30-day range."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text

from app.db import tenant_session
from app.models.common import Role
from app.security import Principal
from app.services.metrics import snapshots
from app.services.metrics.common import MetricQuery, deal_sql, end_of_day
from app.services.metrics.context import context
from app.services.metrics.pipeline import build_rows, open_rows
from app.state import AppState
from app.workers.scheduled import snapshot_pipelines
from tests.conftest import Org
from tests.routers.metrics_reference import (
    TZ,
    build_world,
    fetch_deals,
    local_date,
    local_start,
    post_import,
    ref_pipeline,
)


def _by_day(rows: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        out.setdefault(r["date"], []).append(
            (
                r["stage_key"],
                r["count"],
                tuple((a["currency"], a["amount"], a["weighted_amount"]) for a in r["amounts"]),
            )
        )
    return out


def _rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["stage_key"],
            r["count"],
            tuple((a["currency"], a["amount"], a["weighted_amount"]) for a in r["amounts"]),
        )
        for r in rows
    ]


async def _as_of(org: Org, day: str) -> list[tuple[Any, ...]]:
    r = await org.client.get("/v1/metrics/pipeline", params={"as_of": day}, headers=org.auth())
    assert r.status_code == 200, r.text
    return _rows(r.json()["rows"])


async def _reconstructed(state: AppState, org: Org, day: date) -> list[tuple[Any, ...]]:
    """The as-of reconstruction from stage and field history, straight from the service."""
    principal = Principal(
        user_id=uuid.UUID(org.admin_id), org_id=uuid.UUID(org.id), role=Role.admin, team_id=None
    )
    query = MetricQuery()
    async with tenant_session(state.sessions, principal.org_id) as session:
        ctx = await context(session, principal, query)
        sql = deal_sql(principal, query, currency_column=None)
        rows = await open_rows(session, ctx, at=end_of_day(day, TZ), group="NULL::text", sql=sql)
        return _rows([r.model_dump(mode="json") for r in build_rows(ctx, rows, day=day, on=day)])


async def test_snapshot_trend_agrees_with_as_of_for_every_day_of_30(org: Org, state: AppState) -> None:
    world = await build_world(org, deals=50, leads=5)
    org_id = uuid.UUID(org.id)
    today = local_date(datetime.now(UTC))
    days = [today - timedelta(days=i) for i in range(30, 0, -1)]
    # The cron job fills the last week; the rest are taken the way it takes each day.
    assert await snapshot_pipelines({"state": state}) >= 7
    async with tenant_session(state.sessions, org_id) as session:
        for day in days[:-7]:
            await snapshots.take_snapshot(session, org_id, day, TZ)
        await session.commit()
        taken = (
            await session.execute(
                text("SELECT count(*) FROM pipeline_snapshot_days WHERE org_id = :o"), {"o": org_id}
            )
        ).scalar_one()
    assert taken == 30
    assert await snapshot_pipelines({"state": state}) == 0  # nothing missing: nothing taken twice

    params = {"from": days[0].isoformat(), "to": today.isoformat()}
    r = await org.client.get("/v1/metrics/pipeline/trend", params=params, headers=org.auth())
    assert r.status_code == 200, r.text
    trend = _by_day(r.json()["rows"])
    assert sum(len(v) for v in trend.values()) > 30
    deals = await fetch_deals(org)
    for day in days:
        reconstructed = await _reconstructed(state, org, day)
        assert trend.get(day.isoformat(), []) == reconstructed, day
        assert await _as_of(org, day.isoformat()) == reconstructed, day
        expected = ref_pipeline(world, deals, local_start(day + timedelta(days=1)))
        # ... and equal the plain-Python reading of the definition.
        assert {(k, c): (a, w) for k, _, amounts in reconstructed for c, a, w in amounts} == {
            k: (a, w) for k, (_, a, w) in expected.items()
        }, day
        counts: dict[str, int] = {}
        for (stage, _), (n, _, _) in expected.items():
            counts[stage] = counts.get(stage, 0) + n
        assert {k: n for k, n, _ in reconstructed} == counts, day

    # The trend reads the snapshots (a tampered snapshot shows), and an import of older history drops
    # the snapshots it rewrote, so trend and reconstruction still agree.
    async with state.sessions() as session:
        await session.execute(
            text("UPDATE pipeline_snapshots SET count = count + 1000 WHERE org_id = :o AND day = :d"),
            {"o": org_id, "d": days[10]},
        )
        await session.commit()
    r = await org.client.get("/v1/metrics/pipeline/trend", params=params, headers=org.auth())
    tampered = _by_day(r.json()["rows"])[days[10].isoformat()]
    assert tampered != await _reconstructed(state, org, days[10])
    # as_of reads the snapshot too, unless the current owner matters (a rep's view reconstructs).
    assert await _as_of(org, days[10].isoformat()) == tampered
    r = await org.client.get(
        "/v1/metrics/pipeline", params={"as_of": days[10].isoformat(), "source": "api"}, headers=org.auth()
    )
    assert r.status_code == 200 and all(row["count"] < 1000 for row in r.json()["rows"])
    created = datetime.combine(days[5], datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    report = await post_import(
        org,
        "deals",
        [
            {
                "external_id": "late-arrival",
                "name": "Backdated",
                "amount": "10.00",
                "currency": "USD",
                "created_at": created.isoformat(),
                "stage_history": [{"stage": "quote"}],
            }
        ],
    )
    assert report["created"] == 1
    r = await org.client.get("/v1/metrics/pipeline/trend", params=params, headers=org.auth())
    trend = _by_day(r.json()["rows"])
    for day in days:
        assert trend.get(day.isoformat(), []) == await _reconstructed(state, org, day), day
    # Deleting a deal takes it out of the past too: the snapshots since its creation go.
    old = next(
        d for d in await fetch_deals(org) if d["status"] == "open" and d["created"] < local_start(days[3])
    )
    assert (await org.client.delete(f"/v1/deals/{old['id']}", headers=org.auth())).status_code in (200, 204)
    r = await org.client.get("/v1/metrics/pipeline/trend", params=params, headers=org.auth())
    trend = _by_day(r.json()["rows"])
    for day in days:
        assert trend.get(day.isoformat(), []) == await _reconstructed(state, org, day), day

    # Snapshots are local days: another timezone makes them other days, so they go.
    r = await org.client.patch("/v1/organisation", json={"settings": {"timezone": "UTC"}}, headers=org.auth())
    assert r.status_code == 200
    async with state.sessions() as session:
        left = await session.execute(
            text("SELECT count(*) FROM pipeline_snapshot_days WHERE org_id = :o"), {"o": org_id}
        )
        assert left.scalar_one() == 0
        # ... and the closed-deal rollup is rebuilt on UTC days.
        days_by_rollup = await session.execute(
            text(
                "SELECT day, sum(n) FROM deal_closed_rollup WHERE org_id = :o AND n <> 0 GROUP BY 1 ORDER BY 1"
            ),
            {"o": org_id},
        )
        days_by_deals = await session.execute(
            text(
                "SELECT (closed_at AT TIME ZONE 'UTC')::date, count(*) FROM deals "
                "WHERE org_id = :o AND status IN ('won', 'lost') GROUP BY 1 ORDER BY 1"
            ),
            {"o": org_id},
        )
        assert days_by_rollup.all() == days_by_deals.all()


async def test_trend_by_week_and_month_points_at_interval_ends(org: Org) -> None:
    await build_world(org, deals=5, leads=1)
    r = await org.client.get(
        "/v1/metrics/pipeline/trend",
        params={"from": "2026-09-01", "to": "2026-11-01", "interval": "month"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    assert {row["date"] for row in r.json()["rows"]} <= {"2026-09-30", "2026-10-31"}
    assert r.json()["filters"]["interval"] == "month"
    assert snapshots.trend_days(
        datetime(2026, 11, 4).date(), datetime(2026, 11, 20).date(), snapshots.Interval.week
    ) == [datetime(2026, 11, d).date() for d in (8, 15, 19)]
