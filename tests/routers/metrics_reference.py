"""An independent reading of DESIGN.md §7 for the metrics tests: a history data set brought in
through the import API, read back through the plain deal/lead APIs, and each definition computed
in plain Python over those rows (no code from app.services.metrics)."""

from __future__ import annotations

import json
import random
import uuid
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tests.conftest import Org
from tests.factories import make_team

TZ = "Asia/Shanghai"
ZONE = zoneinfo.ZoneInfo(TZ)
OPEN_KEYS = ["prospect", "first_contact", "needs_confirmed", "quote", "negotiation"]
PROBABILITY = {"prospect": 10, "first_contact": 20, "needs_confirmed": 40, "quote": 60, "negotiation": 80}
CATEGORY = {"quote": "best_case", "negotiation": "commit"}


# --- rounding and statistics as §7 publishes them ---------------------------------------------


def rate(num: Any, den: Any) -> float | None:
    """Fraction half-up to 4 decimals, None for a zero denominator."""
    if not den:
        return None
    return float((Decimal(num) / Decimal(den)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def days(seconds: Decimal | float | None) -> float | None:
    """Seconds / 86,400 half-up to 2 decimals."""
    if seconds is None:
        return None
    return float((Decimal(str(seconds)) / Decimal(86400)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def minutes(seconds: float | None) -> float | None:
    """Seconds / 60 half-up to 1 decimal."""
    if seconds is None:
        return None
    return float((Decimal(str(seconds)) / Decimal(60)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def percentile(values: list[float], p: float) -> float | None:
    """Continuous percentile (linear interpolation between closest ranks), as percentile_cont."""
    if not values:
        return None
    s = sorted(values)
    pos = p * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def money(value: Decimal, currency: str = "USD") -> str:
    """Two decimals, half-up (both currencies used here have 2)."""
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def parse(ts: str) -> datetime:
    """An API timestamp."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def local_start(day: date) -> datetime:
    """The instant local day `day` begins in the test organisation's timezone."""
    return datetime(day.year, day.month, day.day, tzinfo=ZONE)


def local_date(at: datetime) -> date:
    """The local date of an instant."""
    return at.astimezone(ZONE).date()


# --- the data set -----------------------------------------------------------------------------


@dataclass
class World:
    """What the test built: users, teams, keys, and the lines it imported."""

    org: Org
    stages: dict[str, str]
    pipeline_id: str
    users: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    teams: dict[str, str] = field(default_factory=dict)
    deal_lines: list[dict[str, Any]] = field(default_factory=list)
    lead_lines: list[dict[str, Any]] = field(default_factory=list)


def ndjson(lines: list[dict[str, Any]]) -> bytes:
    """NDJSON body."""
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


async def post_import(org: Org, kind: str, lines: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    """POST an NDJSON import and return its report."""
    r = await org.client.post(
        f"/v1/import/{kind}",
        content=ndjson(lines),
        params=params,
        headers={**org.auth(), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def generate_deals(rng: random.Random, now: datetime, owners: list[str], n: int) -> list[dict[str, Any]]:
    """Deals over the last ~200 days: random walks through the open stages (skips included), won,
    lost, still open, and some lost then reopened and won."""
    lines = []
    for i in range(n):
        created = now - timedelta(days=rng.uniform(3, 200), seconds=rng.randint(0, 86400))
        t = created
        history: list[dict[str, Any]] = [{"stage": "prospect", "entered_at": _iso(created)}]
        pos = 0
        for _ in range(rng.randint(0, 4)):
            pos = min(4, pos + rng.choice([1, 1, 2]))
            t = t + timedelta(hours=rng.uniform(2, 24 * 12))
            if t > now - timedelta(hours=2):
                break
            history.append({"stage": OPEN_KEYS[pos], "entered_at": _iso(t)})
        outcome = rng.choice(["open", "won", "lost", "won", "lost", "reopened"])
        currency = rng.choice(["CNY", "USD"])
        line: dict[str, Any] = {
            "external_id": f"D-{i}",
            "name": f"Deal {i}",
            "account_name": f"Account {i % 7}",
            "owner_email": rng.choice(owners),
            "amount": str(Decimal(rng.randint(1000, 900000)) / 100),
            "currency": currency,
            "created_at": _iso(created),
            "expected_close_date": (now + timedelta(days=rng.randint(-60, 120))).date().isoformat(),
            "stage_history": history,
        }
        close_at = t + timedelta(hours=rng.uniform(1, 24 * 20))
        if outcome in ("won", "lost") and close_at < now - timedelta(hours=1):
            line["status"] = outcome
            line["closed_at"] = _iso(close_at)
            if outcome == "lost":
                line["lost_reason"] = "price"
        elif outcome == "reopened":
            t1 = close_at
            t2 = t1 + timedelta(hours=rng.uniform(1, 48))
            t3 = t2 + timedelta(hours=rng.uniform(1, 24 * 5))
            if t3 < now - timedelta(hours=1):
                history += [
                    {"stage": "lost", "entered_at": _iso(t1)},
                    {"stage": "negotiation", "entered_at": _iso(t2)},
                    {"stage": "won", "entered_at": _iso(t3)},
                ]
                line["status"] = "won"
        lines.append(line)
    return lines


def generate_leads(
    rng: random.Random, now: datetime, owners: list[str], deals: list[dict[str, Any]], n: int
) -> list[dict[str, Any]]:
    """Leads from several sources, contacted, qualified, some converted to the imported deals."""
    lines = []
    convertible = list(deals)
    rng.shuffle(convertible)
    for i in range(n):
        created = now - timedelta(days=rng.uniform(3, 200), seconds=rng.randint(0, 86400))
        line: dict[str, Any] = {
            "external_id": f"L-{i}",
            "name": f"Lead {i}",
            "email": f"lead{i}@example.com",
            "source": rng.choice(["web_form", "email", "api", "webhook"]),
            "owner_email": rng.choice([*owners, None]),
            "status": rng.choice(["new", "working", "qualified", "unqualified"]),
            "created_at": _iso(created),
        }
        if line["owner_email"] is None:
            del line["owner_email"]
        if rng.random() < 0.7:
            line["first_contacted_at"] = _iso(created + timedelta(seconds=rng.randint(30, 200000)))
        if i % 3 == 0 and convertible:
            deal = convertible.pop()
            line["converted_deal_external_id"] = deal["external_id"]
            line["status"] = "converted"
        lines.append(line)
    return lines


async def build_world(org: Org, *, deals: int = 60, leads: int = 60, seed: int = 12) -> World:
    """Users in two teams, a year of history imported, and live changes on top."""
    r = await org.client.patch("/v1/organisation", json={"settings": {"timezone": TZ}}, headers=org.auth())
    assert r.status_code == 200, r.text
    r = await org.client.get("/v1/pipelines", headers=org.auth())
    pipeline = r.json()[0]
    world = World(org=org, stages={s["key"]: s["id"] for s in pipeline["stages"]}, pipeline_id=pipeline["id"])
    world.teams["a"] = await make_team(org)
    world.teams["b"] = await make_team(org)
    for name, role, team in (
        ("rep1", "rep", "a"),
        ("rep2", "rep", "a"),
        ("rep3", "rep", "b"),
        ("manager_a", "manager", "a"),
        ("viewer", "viewer", None),
    ):
        user_id, key = await org.add_user(role, name=name, **({"team_id": world.teams[team]} if team else {}))
        world.users[name], world.keys[name] = user_id, key
    if True:  # the team's manager
        r = await org.client.patch(
            f"/v1/teams/{world.teams['a']}", json={"manager_id": world.users["manager_a"]}, headers=org.auth()
        )
        assert r.status_code == 200, r.text
    emails = {}
    for name, user_id in world.users.items():
        r = await org.client.get(f"/v1/users/{user_id}", headers=org.auth())
        emails[name] = r.json()["email"]
    owners = [emails["rep1"], emails["rep2"], emails["rep3"], emails["manager_a"]]
    rng = random.Random(seed)  # noqa: S311 (a reproducible data set, not a secret)
    now = datetime.now(UTC)
    world.deal_lines = generate_deals(rng, now, owners, deals)
    world.lead_lines = generate_leads(rng, now, owners, world.deal_lines, leads)
    report = await post_import(org, "deals", world.deal_lines)
    assert report["failed"] == 0, report["errors"]
    report = await post_import(org, "leads", world.lead_lines)
    assert report["failed"] == 0, report["errors"]
    return world


async def live_changes(world: World) -> None:
    """Changes through the live API after the import: a new deal moved, one lost, an amount changed."""
    org = world.org
    r = await org.client.post(
        "/v1/deals",
        json={"name": "Live", "amount": "1234.50", "currency": "USD", "owner_id": world.users["rep1"]},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    live = r.json()["id"]
    r = await org.client.post(
        f"/v1/deals/{live}/move", json={"stage_id": world.stages["first_contact"]}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    r = await org.client.post(
        "/v1/deals", json={"name": "Live lost", "amount": "99.99", "currency": "CNY"}, headers=org.auth()
    )
    lost = r.json()["id"]
    r = await org.client.post(f"/v1/deals/{lost}/lost", json={"reason": "price"}, headers=org.auth())
    assert r.status_code == 200, r.text
    # A deal imported without an amount, given one now: before now it had none.
    created = datetime.now(UTC) - timedelta(days=50)
    report = await post_import(
        org,
        "deals",
        [
            {
                "external_id": "no-amount",
                "name": "Deal no amount",
                "currency": "USD",
                "created_at": _iso(created),
                "stage_history": [{"stage": "needs_confirmed"}],
            }
        ],
    )
    assert report["created"] == 1, report
    # An amount change of an imported open deal: the past keeps the old amount.
    deals = await fetch_deals(org)
    no_amount = next(d for d in deals if d["name"] == "Deal no amount")
    r = await org.client.patch(f"/v1/deals/{no_amount['id']}", json={"amount": "500.00"}, headers=org.auth())
    assert r.status_code == 200, r.text
    target = next(d for d in deals if d["status"] == "open" and d["name"].startswith("Deal"))
    r = await org.client.patch(f"/v1/deals/{target['id']}", json={"amount": "777.77"}, headers=org.auth())
    assert r.status_code == 200, r.text


# --- reading the rows back through the plain APIs ---------------------------------------------


async def fetch_all(org: Org, path: str) -> list[dict[str, Any]]:
    """Every item of a paginated list."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        r = await org.client.get(path, params=params, headers=org.auth())
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["data"])
        cursor = body.get("next_cursor")
        if not cursor:
            return out


async def fetch_deals(org: Org) -> list[dict[str, Any]]:
    """Every deal with its stage history [(stage_id, at)] and field history [(field, old, new, at)]."""
    deals = await fetch_all(org, "/v1/deals")
    for deal in deals:
        r = await org.client.get(f"/v1/deals/{deal['id']}/history", headers=org.auth())
        assert r.status_code == 200, r.text
        entries = r.json()
        deal["stages"] = [(h["to_stage_id"], parse(h["at"])) for h in entries if h["kind"] == "stage"]
        deal["fields"] = [
            (h["field"], h["old_value"], h["new_value"], parse(h["at"]))
            for h in entries
            if h["kind"] == "field"
        ]
        deal["created"] = parse(deal["created_at"])
        deal["closed"] = parse(deal["closed_at"]) if deal["closed_at"] else None
    return deals


# --- the definitions, in plain Python ---------------------------------------------------------


def in_period(at: datetime | None, start: date, end: date) -> bool:
    """A timestamp falls on a local date in [start, end)."""
    return at is not None and local_start(start) <= at < local_start(end)


def ref_funnel(world: World, deals: list[dict[str, Any]], start: date, end: date) -> list[dict[str, Any]]:
    """Cohort funnel rows: (stage key, reached, cfp, cff, drop_off, lost_here, amounts by currency)."""
    cohort = [d for d in deals if in_period(d["created"], start, end)]
    open_ids = [world.stages[k] for k in OPEN_KEYS]
    reached = [0] * 6
    reached_amount: list[dict[str, Decimal]] = [defaultdict(Decimal) for _ in range(6)]
    lost_here = [0] * 5
    for d in cohort:
        positions = [open_ids.index(s) for s, _ in d["stages"] if s in open_ids]
        top = 5 if d["status"] == "won" else (max(positions) if positions else -1)
        for i in range(top + 1):
            reached[i] += 1
            reached_amount[i][d["currency"]] += Decimal(d["amount"] or 0)
        if d["status"] == "lost":
            last_open = [s for s, _ in d["stages"] if s in open_ids][-1]
            lost_here[open_ids.index(last_open)] += 1
    rows = []
    for i, key in enumerate([*OPEN_KEYS, "won"]):
        cfp = rate(reached[i], reached[i - 1]) if i else None
        rows.append(
            {
                "stage_key": key,
                "reached": reached[i],
                "conversion_from_previous": cfp,
                "conversion_from_first": rate(reached[i], reached[0]),
                "drop_off": None if cfp is None else float(Decimal(1) - Decimal(str(cfp))),
                "lost_here": lost_here[i] if i < 5 else None,
                "amounts": {c: money(v) for c, v in sorted(reached_amount[i].items())},
            }
        )
    return rows


def value_at(deal: dict[str, Any], name: str, at: datetime, current: Any) -> Any:
    """A tracked field's value at an instant: the last change before it, else the first change's
    previous value, else the current value."""
    changes = sorted((f for f in deal["fields"] if f[0] == name), key=lambda f: f[3])
    before = [f for f in changes if f[3] < at]
    if before:
        return before[-1][2]
    if changes:
        return changes[0][1]
    return current


def ref_pipeline(
    world: World, deals: list[dict[str, Any]], at: datetime
) -> dict[tuple[str, str], tuple[int, str, str]]:
    """{(stage key, currency): (count, amount, weighted)} of the deals open at the instant."""
    key_of = {v: k for k, v in world.stages.items()}
    count: dict[tuple[str, str], int] = defaultdict(int)
    amount: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    weighted: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for d in deals:
        if d["created"] >= at:
            continue
        entered = [s for s, t in d["stages"] if t < at]
        if not entered or key_of[entered[-1]] not in OPEN_KEYS:
            continue
        cur = value_at(d, "currency", at, d["currency"])
        amt = value_at(d, "amount", at, d["amount"])
        prob = value_at(d, "probability", at, d["probability"])
        k = (key_of[entered[-1]], cur)
        count[k] += 1
        if amt is not None:
            amount[k] += Decimal(amt)
            weighted[k] += Decimal(amt) * Decimal(prob) / 100
    return {k: (count[k], money(amount[k]), money(weighted[k])) for k in count}


def closed_in(deals: list[dict[str, Any]], start: date, end: date) -> list[dict[str, Any]]:
    """Deals whose current closed_at is in the period (won or lost)."""
    return [d for d in deals if d["status"] in ("won", "lost") and in_period(d["closed"], start, end)]


def ref_win_rate(deals: list[dict[str, Any]], start: date, end: date) -> dict[str, Any]:
    """won, lost, win rate, won amounts per currency."""
    closed = closed_in(deals, start, end)
    won = [d for d in closed if d["status"] == "won"]
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for d in won:
        amounts[d["currency"]] += Decimal(d["amount"] or 0)
    return {
        "won": len(won),
        "lost": len(closed) - len(won),
        "win_rate": rate(len(won), len(closed)),
        "won_amounts": {c: money(v) for c, v in sorted(amounts.items())},
    }


def ref_cycle(world: World, deals: list[dict[str, Any]], start: date, end: date) -> dict[str, Any]:
    """Mean, median, p75 days of won deals; time in stage per stage key."""
    won = [d for d in closed_in(deals, start, end) if d["status"] == "won"]
    secs = [Decimal(str((d["closed"] - d["created"]).total_seconds())) for d in won]
    floats = [float(s) for s in secs]
    key_of = {v: k for k, v in world.stages.items()}
    stays: dict[str, list[float]] = defaultdict(list)
    for d in deals:
        for (stage, t0), (_, t1) in zip(d["stages"], d["stages"][1:], strict=False):
            if in_period(t1, start, end):
                stays[key_of[stage]].append((t1 - t0).total_seconds())
    return {
        "won": len(won),
        "mean_days": days(sum(secs) / len(secs)) if secs else None,
        "median_days": days(percentile(floats, 0.5)),
        "p75_days": days(percentile(floats, 0.75)),
        "stages": {
            k: (
                len(v),
                days(Decimal(str(sum(Decimal(str(x)) for x in v))) / len(v)),
                days(percentile(v, 0.5)),
            )
            for k, v in stays.items()
        },
    }


def ref_lead_funnel(
    leads: list[dict[str, Any]], deals: list[dict[str, Any]], start: date, end: date
) -> dict[str, Any]:
    """The lead cohort's counts, rates and speed to lead."""
    status_of = {d["id"]: d["status"] for d in deals}
    cohort = [
        le
        for le in leads
        if le["duplicate_of"] is None
        and le["deleted_at"] is None
        and in_period(parse(le["created_at"]), start, end)
    ]
    contacted = [le for le in cohort if le["first_contacted_at"]]
    qualified = [le for le in cohort if le["status"] in ("qualified", "converted")]
    converted = [le for le in cohort if le["converted_deal_id"]]
    won = [le for le in converted if status_of.get(le["converted_deal_id"]) == "won"]
    speed = [(parse(le["first_contacted_at"]) - parse(le["created_at"])).total_seconds() for le in contacted]
    return {
        "created": len(cohort),
        "contacted": len(contacted),
        "qualified": len(qualified),
        "converted": len(converted),
        "won": len(won),
        "contacted_rate": rate(len(contacted), len(cohort)),
        "qualified_rate": rate(len(qualified), len(cohort)),
        "converted_rate": rate(len(converted), len(cohort)),
        "won_rate": rate(len(won), len(cohort)),
        "qualified_step_rate": rate(len(qualified), len(contacted)),
        "converted_step_rate": rate(len(converted), len(qualified)),
        "won_step_rate": rate(len(won), len(converted)),
        "speed_to_lead_median_minutes": minutes(percentile(speed, 0.5)),
        "speed_to_lead_p90_minutes": minutes(percentile(speed, 0.9)),
    }


def _u(value: str) -> str:
    return str(uuid.UUID(value))


def ref_forecast(deals: list[dict[str, Any]]) -> dict[str, dict[str, tuple[str, str, str, str, str]]]:
    """{month: {currency: (amount, weighted, commit, best_case, pipeline)}} of the deals open now."""
    acc: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: defaultdict(lambda: [Decimal(0)] * 5))
    for d in deals:
        if d["status"] != "open":
            continue
        month = d["expected_close_date"][:7] if d["expected_close_date"] else "none"
        amount = Decimal(d["amount"] or 0)
        v = acc[month][d["currency"]]
        v[0] += amount
        v[1] += amount * Decimal(d["probability"]) / 100
        category = CATEGORY.get(d.get("stage_key", ""), "pipeline")
        v[{"commit": 2, "best_case": 3, "pipeline": 4}[category]] += amount
    return {m: {c: tuple(money(x) for x in v) for c, v in cs.items()} for m, cs in acc.items()}  # type: ignore[misc]


def ref_velocity(
    world: World, deals: list[dict[str, Any]], start: date, end: date
) -> dict[str, dict[str, Any]]:
    """Per currency: open deals as of the last day, win rate, mean won amount, mean cycle, velocity."""
    last = end - timedelta(days=1)
    at = local_start(last + timedelta(days=1))
    open_now = ref_pipeline(world, deals, at)
    out: dict[str, dict[str, Any]] = {}
    closed = closed_in(deals, start, end)
    currencies = {d["currency"] for d in closed} | {c for _, c in open_now}
    for cur in sorted(currencies):
        n_open = sum(n for (_, c), (n, _, _) in open_now.items() if c == cur)
        won = [d for d in closed if d["currency"] == cur and d["status"] == "won"]
        lost = [d for d in closed if d["currency"] == cur and d["status"] == "lost"]
        mean_amount = sum((Decimal(d["amount"]) for d in won), Decimal(0)) / len(won) if won else None
        mean_seconds = (
            sum((Decimal(str((d["closed"] - d["created"]).total_seconds())) for d in won), Decimal(0))
            / len(won)
            if won
            else None
        )
        velocity = None
        if won and mean_seconds:
            assert mean_amount is not None
            velocity = money(
                Decimal(n_open)
                * Decimal(len(won))
                / Decimal(len(won) + len(lost))
                * mean_amount
                / (mean_seconds / Decimal(86400))
            )
        out[cur] = {
            "open_deals": n_open,
            "won": len(won),
            "lost": len(lost),
            "win_rate": rate(len(won), len(won) + len(lost)),
            "mean_won_amount": money(mean_amount) if mean_amount is not None else None,
            "mean_cycle_days": days(mean_seconds),
            "velocity_per_day": velocity,
        }
    return out


def ref_reps(
    leads: list[dict[str, Any]], deals: list[dict[str, Any]], start: date, end: date, user_id: str
) -> dict[str, Any]:
    """One owner's numbers."""
    own = [
        le
        for le in leads
        if le["owner_id"] == user_id
        and le["duplicate_of"] is None
        and in_period(parse(le["created_at"]), start, end)
    ]
    closed = [d for d in closed_in(deals, start, end) if d["owner_id"] == user_id]
    won = [d for d in closed if d["status"] == "won"]
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for d in won:
        amounts[d["currency"]] += Decimal(d["amount"] or 0)
    return {
        "leads_created": len(own),
        "leads_contacted": sum(1 for le in own if le["first_contacted_at"]),
        "leads_converted": sum(1 for le in own if le["converted_deal_id"]),
        "deals_won": len(won),
        "deals_lost": len(closed) - len(won),
        "win_rate": rate(len(won), len(closed)),
        "won": {c: money(v) for c, v in amounts.items()},
    }
