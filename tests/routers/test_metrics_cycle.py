"""The cycle metric read from the duration rollups and index walks (app.services.metrics.durations)
equals the same metric in SQL over the stays table and over the stage history, and an independent
computation of DESIGN.md §7 in Python: on stays and closes exactly on the period's local-day edges
in a non-UTC timezone, odd and even counts, ties, zero-length stays, a stage with one stay and one
with none; after live moves, a loss and reopen, deletes, a re-import that rewrites a history, and a
timezone change."""

from __future__ import annotations

import itertools
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from sqlalchemy import text

from app.services.metrics import durations, wins
from app.state import AppState
from tests.conftest import Org
from tests.routers.metrics_reference import fetch_deals, post_import

START_TZ = "Asia/Shanghai"
OPEN = ["prospect", "first_contact", "needs_confirmed", "quote", "negotiation"]
US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def _seconds(delta: timedelta) -> Decimal:
    """A duration's exact seconds (microseconds included)."""
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(1_000_000)


def _percentile(values: list[float], p: float) -> float | None:
    """percentile_cont written out: rank p·(N-1) of the sorted values, linear between neighbours."""
    if not values:
        return None
    s = sorted(values)
    pos = p * (len(s) - 1)
    lo = int(pos)
    if lo == pos:
        return s[lo]
    return s[lo] + (pos - lo) * (s[lo + 1] - s[lo])


def _days(seconds: Decimal | float | None) -> float | None:
    if seconds is None:
        return None
    value = Decimal(repr(seconds)) if isinstance(seconds, float) else seconds
    return float((value / Decimal(86400)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass
class Base:
    """The base rows: each deal's status, created_at, closed_at; its stage history in (at, id) order
    (the tie-break of entries at the same instant, as §7's stays are numbered)."""

    deals: list[tuple[str, datetime, datetime | None]]
    history: dict[Any, list[tuple[datetime, Any, Any]]]


async def _base(state: AppState, org_id: str) -> Base:
    async with state.sessions() as session:
        deals = (
            await session.execute(
                text("SELECT status, created_at, closed_at FROM deals WHERE org_id = :o"), {"o": org_id}
            )
        ).all()
        rows = (
            await session.execute(
                text("SELECT deal_id, at, id, to_stage_id FROM deal_stage_history WHERE org_id = :o"),
                {"o": org_id},
            )
        ).all()
    history: dict[Any, list[tuple[datetime, Any, Any]]] = defaultdict(list)
    for deal_id, at, entry_id, stage_id in rows:
        history[deal_id].append((at, entry_id, stage_id))
    return Base([tuple(d) for d in deals], {k: sorted(v) for k, v in history.items()})


def _reference(base: Base, keys: dict[str, str], start: date, end: date, tz: str) -> dict[str, Any]:
    """§7 over the base rows: won deals closed in [start, end) local days; stays (entry -> next
    entry) that ended in it, per stage."""
    zone = zoneinfo.ZoneInfo(tz)
    t0 = datetime(start.year, start.month, start.day, tzinfo=zone)
    t1 = datetime(end.year, end.month, end.day, tzinfo=zone)
    won = [
        closed - created
        for status, created, closed in base.deals
        if status == "won" and closed is not None and t0 <= closed < t1
    ]
    stays: dict[str, list[timedelta]] = defaultdict(list)
    for entries in base.history.values():
        for (entered, _, stage), (left, _, _) in itertools.pairwise(entries):
            if t0 <= left < t1:
                stays[keys[str(stage)]].append(left - entered)

    def stats(values: list[timedelta]) -> tuple[int, float | None, float | None]:
        exact = [_seconds(v) for v in values]
        floats = [float(x) for x in exact]
        mean = sum(exact, Decimal(0)) / len(exact) if exact else None
        return len(values), _days(mean), _days(_percentile(floats, 0.5))

    n, mean, median = stats(won)
    floats = [float(_seconds(v)) for v in won]
    return {
        "won": (n, mean, median, _days(_percentile(floats, 0.75))),
        "stages": {k: stats(v) for k, v in stays.items()},
    }


def _summary(body: dict[str, Any]) -> dict[str, Any]:
    (row,) = body["rows"] or [
        {"won": 0, "mean_days": None, "median_days": None, "p75_days": None, "time_in_stage": []}
    ]
    return {
        "won": (row["won"], row["mean_days"], row["median_days"], row["p75_days"]),
        "stages": {
            s["stage_key"]: (s["stays"], s["stage_mean_days"], s["stage_median_days"])
            for s in row["time_in_stage"]
        },
    }


async def _cycle_every_way(
    org: Org, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The cycle answer from the rollups (the fast path must be taken), from SQL over the stays and
    from SQL over the stage history: all three equal."""
    taken: list[bool] = []
    cycle_rows = durations.cycle_rows

    async def spy(*args: Any) -> Any:
        result = await cycle_rows(*args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(durations, "cycle_rows", spy)
    answers = []
    for fast, table in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(wins, "FAST_PERCENTILES", fast)
        monkeypatch.setattr(wins, "USE_STAYS_TABLE", table)
        r = await org.client.get("/v1/metrics/cycle", params=params, headers=org.auth())
        assert r.status_code == 200, r.text
        answers.append(r.json())
    monkeypatch.setattr(durations, "cycle_rows", cycle_rows)
    assert taken == [True], params
    assert answers[0] == answers[1] == answers[2], params
    return dict(answers[0])


class Builder:
    """Import lines with exact stage histories: (stage key, seconds in it) steps from `created`."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def deal(self, created: datetime, steps: list[tuple[str, timedelta]], status: str = "open") -> None:
        """A deal entering each step's stage, staying its duration; then won/lost at the end, or
        still in the last stage (its duration then unused; a last step into won or lost closes it)."""
        history = []
        at = created
        for key, stay in steps:
            history.append({"stage": key, "entered_at": at.isoformat()})
            at = at + stay
        if steps[-1][0] in ("won", "lost"):
            status, at = steps[-1][0], datetime.fromisoformat(history[-1]["entered_at"])
        line: dict[str, Any] = {
            "external_id": f"C-{len(self.lines)}",
            "name": f"Cycle {len(self.lines)}",
            "currency": "USD",
            "amount": "100.00",
            "created_at": created.isoformat(),
            "stage_history": history,
        }
        if status != "open":
            line["status"] = status
            line["closed_at"] = at.isoformat()
            if status == "lost":
                line["lost_reason"] = "price"
        self.lines.append(line)


def _data(today: date) -> tuple[Builder, date, date]:
    """Deals whose stays and closes fall on and around the local edges of [p0, p1)."""
    zone = zoneinfo.ZoneInfo(START_TZ)
    p0, p1 = today - timedelta(days=60), today - timedelta(days=20)
    t0 = datetime(p0.year, p0.month, p0.day, tzinfo=zone)
    t1 = datetime(p1.year, p1.month, p1.day, tzinfo=zone)
    b = Builder()
    h = timedelta(hours=1)
    # prospect stays ending exactly at t0 (in), a microsecond before t0 (out), a microsecond before
    # t1 (in), exactly at t1 (out); ties; seven in the period (odd).
    b.deal(t0 - 2 * DAY, [("prospect", 2 * DAY), ("first_contact", 3 * DAY)])
    b.deal(t0 - 2 * DAY - US, [("prospect", 2 * DAY), ("first_contact", h)])
    b.deal(t1 - 5 * DAY - US, [("prospect", 5 * DAY), ("quote", DAY)])
    b.deal(t1 - 5 * DAY, [("prospect", 5 * DAY), ("quote", DAY)])
    for i in range(4):
        b.deal(
            t0 + (3 + i) * DAY,
            [("prospect", 2 * DAY + (i % 2) * 7 * h), ("first_contact", DAY), ("quote", DAY)],
        )
    b.deal(t0 + 20 * DAY + 123456 * US, [("prospect", 3 * DAY + 777 * US), ("first_contact", DAY)])
    # first_contact: six in the period (even) — four above, two below, one of them zero-length.
    b.deal(t0 + 10 * DAY, [("prospect", h), ("first_contact", 30 * h), ("negotiation", h)], "won")
    b.deal(t0 + 11 * DAY, [("prospect", h), ("first_contact", timedelta(0)), ("negotiation", 3 * DAY)], "won")
    # needs_confirmed: one stay in the period, one after it.
    b.deal(
        t0 + 12 * DAY, [("prospect", h), ("needs_confirmed", 4 * DAY + 17 * US), ("negotiation", h)], "lost"
    )
    b.deal(t1 + DAY, [("prospect", h), ("needs_confirmed", h), ("quote", h)])
    # negotiation: ties (three of 3 days) — and the won deals: closes at t0 (in), t1 - 1 µs (in), t1 (out).
    b.deal(t0 - 5 * DAY, [("prospect", 2 * DAY), ("negotiation", 3 * DAY)], "won")
    b.deal(t1 - 7 * DAY - US, [("prospect", 4 * DAY), ("negotiation", 3 * DAY)], "won")
    b.deal(t1 - 7 * DAY, [("prospect", 4 * DAY), ("negotiation", 3 * DAY)], "won")
    b.deal(t0 + 25 * DAY, [("negotiation", 6 * DAY + 5 * h)], "won")
    # quote: no stay ends in the period (one before it); it is the current stage of others.
    b.deal(t0 - 30 * DAY, [("prospect", h), ("quote", 2 * DAY), ("negotiation", h)], "lost")
    # A deal lost in the period, reopened and won (the lost stage's stay ends at the reopen).
    b.deal(
        t0 + 15 * DAY,
        [("prospect", DAY), ("negotiation", DAY), ("lost", 2 * DAY), ("negotiation", DAY), ("won", h)],
    )
    return b, p0, p1


async def _check(
    org: Org,
    state: AppState,
    keys: dict[str, str],
    periods: list[tuple[date, date]],
    tz: str,
    monkeypatch: pytest.MonkeyPatch,
) -> list[dict[str, Any]]:
    base = await _base(state, org.id)
    out = []
    for start, end in periods:
        params = {"from": start.isoformat(), "to": end.isoformat()}
        body = await _cycle_every_way(org, params, monkeypatch)
        assert _summary(body) == _reference(base, keys, start, end, tz), params
        out.append(_summary(body))
        for group in ("month", "week"):
            await _cycle_every_way(org, {**params, "group_by": group}, monkeypatch)
    await _cycle_every_way(org, {}, monkeypatch)
    return out


async def test_cycle_from_rollups_equals_sql_and_the_definition(
    org: Org, state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"timezone": START_TZ}}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    r = await org.client.get("/v1/pipelines", headers=org.auth())
    stage_ids = {s["key"]: s["id"] for s in r.json()[0]["stages"]}
    keys = {v: k for k, v in stage_ids.items()}
    today = datetime.now(zoneinfo.ZoneInfo(START_TZ)).date()
    built, p0, p1 = _data(today)
    report = await post_import(org, "deals", built.lines)
    assert report["failed"] == 0, report["errors"]
    periods = [(p0, p1), (p0 + DAY, p1 - DAY), (p0 - 40 * DAY, today + DAY)]

    (first, *_) = await _check(org, state, keys, periods, START_TZ, monkeypatch)
    won, stages = first["won"], first["stages"]
    assert won[0] == 6, first  # the close at t0 counts, the one at t1 does not
    assert stages["prospect"][0] == 13 and stages["first_contact"][0] == 6, first
    assert stages["needs_confirmed"][0] == 1 and "quote" not in stages, first
    assert stages["negotiation"][0] == 8 and stages["lost"][0] == 1, first

    # Live changes: a new deal moved and lost, a deal lost then reopened, deletes, a rewritten history.
    r = await org.client.post("/v1/deals", json={"name": "Live", "currency": "USD"}, headers=org.auth())
    assert r.status_code == 201, r.text
    live = r.json()["id"]
    r = await org.client.post(
        f"/v1/deals/{live}/move", json={"stage_id": stage_ids["first_contact"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    r = await org.client.post(f"/v1/deals/{live}/lost", json={"reason": "price"}, headers=org.auth())
    assert r.status_code == 200, r.text
    deals = await fetch_deals(org)
    still_open = [d for d in deals if d["status"] == "open"]
    r = await org.client.post(
        f"/v1/deals/{still_open[0]['id']}/lost", json={"reason": "price"}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    r = await org.client.post(f"/v1/deals/{still_open[0]['id']}/reopen", json={}, headers=org.auth())
    assert r.status_code == 200, r.text
    won_deals = [d for d in deals if d["status"] == "won"]
    for gone in (won_deals[0], still_open[1]):
        r = await org.client.delete(f"/v1/deals/{gone['id']}", headers=org.auth())
        assert r.status_code == 200, r.text
    rewritten = {**built.lines[5], "stage_history": built.lines[5]["stage_history"][:1]}
    report = await post_import(org, "deals", [rewritten])
    assert report["updated"] == 1, report
    await _check(org, state, keys, periods, START_TZ, monkeypatch)

    # Another timezone: the same dates are other instants, the rollups other local days.
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"timezone": "America/Los_Angeles"}}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    await _check(org, state, keys, periods, "America/Los_Angeles", monkeypatch)


async def test_a_period_without_stays_or_wins_has_no_rows(org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    built = Builder()
    built.deal(now - 3 * DAY, [("prospect", DAY), ("first_contact", DAY)], "won")
    report = await post_import(org, "deals", built.lines)
    assert report["failed"] == 0, report["errors"]
    body = await _cycle_every_way(org, {"from": "2020-01-01", "to": "2020-02-01"}, monkeypatch)
    assert body["rows"] == []
    body = await _cycle_every_way(org, {}, monkeypatch)
    (row,) = body["rows"]
    assert row["won"] == 1 and [s["stays"] for s in row["time_in_stage"]] == [1, 1]
