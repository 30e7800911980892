"""The past of the demo organisation, as NDJSON lines for the history import (`loudou demo`).

Pure functions of a seeded random generator and an anchor (the organisation's local midnight
today): every timestamp lies before the anchor, so the import accepts it, and the same seed gives
the same lines whatever the day (only the dates move with it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

OPEN_STAGES = ("prospect", "first_contact", "needs_confirmed", "quote", "negotiation")
# Outcomes by position, so that even one month holds won, lost and open deals; the oldest is won.
OUTCOMES = ("won", "lost", "open", "won", "open", "lost", "won", "open", "won", "lost")
LOST_REASONS = ("price", "competitor", "no_budget", "timing")
LEAD_SOURCES = ("web_form", "web_form", "email", "webhook", "api", "import")
LEAD_STATUSES = ("new", "working", "working", "qualified", "unqualified", "unqualified")
DEALS_PER_MONTH = 10
LEADS_PER_MONTH = 12
COMPANIES = (
    "华海贸易 Huahai Trading",
    "申江物流 Shenjiang Logistics",
    "岭南制造 Lingnan Manufacturing",
    "西湖软件 Xihu Software",
    "长城教育 Great Wall Education",
    "珠江零售 Pearl River Retail",
    "Bergmann Maschinenbau",
    "Lion City Foods",
    "港湾电子 Harbour Electronics",
    "燕京医疗 Yanjing Medical",
    "天府农业 Tianfu Agriculture",
    "东方航运 Oriental Shipping",
)


@dataclass
class HistoryDeal:
    """One imported deal, with what the demo needs afterwards (its order)."""

    external_id: str
    name: str
    account: str
    owner_email: str
    amount: str
    currency: str
    status: str
    created_at: datetime
    closed_at: datetime | None
    line: dict[str, Any] = field(default_factory=dict)


def account_names(months: int) -> list[str]:
    """The history's customers: four a month, at least six (names repeat with a number)."""
    count = max(6, 4 * months)
    return [
        COMPANIES[i % len(COMPANIES)] + (f" {i // len(COMPANIES) + 1}" if i >= len(COMPANIES) else "")
        for i in range(count)
    ]


def _at(anchor: datetime, days_ago: int, rng: random.Random) -> datetime:
    """A business-hours moment `days_ago` local days before the anchor (local midnight today)."""
    return (
        anchor - timedelta(days=days_ago) + timedelta(hours=rng.randrange(9, 18), minutes=rng.randrange(60))
    )


def deals(
    rng: random.Random, anchor: datetime, months: int, reps: list[str], accounts: list[str]
) -> list[HistoryDeal]:
    """`DEALS_PER_MONTH` deals a month, oldest first, walked through the stages with 1-9 days
    between steps; a deal whose walk would reach today stays open where it got to."""
    span = months * 30
    count = DEALS_PER_MONTH * months
    out: list[HistoryDeal] = []
    for i in range(count):
        days_ago = span - (i * (span - 2)) // count  # spread from `span` days ago to 2 days ago
        created = _at(anchor, days_ago, rng)
        outcome = OUTCOMES[i % len(OUTCOMES)]
        reach = len(OPEN_STAGES) - 1 if outcome == "won" else rng.randrange(len(OPEN_STAGES))
        history = [{"stage": OPEN_STAGES[0], "entered_at": created.isoformat()}]
        at = created
        status, closed_at = outcome, None
        most = 3 if i == 0 else 10  # the oldest deal closes quickly: its contract runs longest
        for stage in OPEN_STAGES[1 : reach + 1]:
            step = at + timedelta(days=rng.randrange(1, most), hours=rng.randrange(0, 6))
            if step >= anchor:
                status = "open"
                break
            at = step
            history.append({"stage": stage, "entered_at": at.isoformat()})
        if status != "open":
            closing = at + timedelta(days=rng.randrange(1, most), hours=rng.randrange(0, 6))
            if closing >= anchor:
                status = "open"
            else:
                closed_at = closing
        currency = "USD" if i % 7 == 3 else "CNY"
        amount = f"{rng.randrange(20, 400) * (100 if currency == 'USD' else 500)}.00"
        account = accounts[i % len(accounts)]
        deal = HistoryDeal(
            external_id=f"HIST-D{i + 1:04d}",
            name=f"{account.split(' ')[0]} {['年度许可', '实施项目', '扩容', '续约'][i % 4]} #{i + 1}",
            account=account,
            owner_email=reps[i % len(reps)],
            amount=amount,
            currency=currency,
            status=status,
            created_at=created,
            closed_at=closed_at,
        )
        line: dict[str, Any] = {
            "external_id": deal.external_id,
            "name": deal.name,
            "account_name": account,
            "owner_email": deal.owner_email,
            "amount": amount,
            "currency": currency,
            "created_at": created.isoformat(),
            "status": status,
            "stage_history": history,
        }
        if status == "open":
            line["expected_close_date"] = (anchor.date() + timedelta(days=rng.randrange(5, 100))).isoformat()
        else:
            assert closed_at is not None
            line["closed_at"] = closed_at.isoformat()
            line["expected_close_date"] = closed_at.date().isoformat()
        if status == "lost":
            line["lost_reason"] = rng.choice(LOST_REASONS)
        deal.line = line
        out.append(deal)
    return out


def leads(
    rng: random.Random, anchor: datetime, months: int, reps: list[str], history: list[HistoryDeal]
) -> list[dict[str, Any]]:
    """The source lead of every history deal (converted when the deal was created), and
    `LEADS_PER_MONTH` more a month that were worked, qualified, disqualified or never called."""
    span = months * 30
    lines: list[dict[str, Any]] = []
    for n, deal in enumerate(history):
        created = max(deal.created_at - timedelta(hours=rng.randrange(2, 72)), anchor - timedelta(days=span))
        contacted = created + timedelta(minutes=rng.randrange(3, 240))
        lines.append(
            {
                **_person(rng, n, deal.account),
                "external_id": f"HIST-L{n + 1:04d}",
                "source": LEAD_SOURCES[n % len(LEAD_SOURCES)],
                "owner_email": deal.owner_email,
                "status": "converted",
                "created_at": created.isoformat(),
                "first_contacted_at": min(contacted, deal.created_at).isoformat(),
                "converted_at": deal.created_at.isoformat(),
                "converted_deal_external_id": deal.external_id,
            }
        )
    extra = LEADS_PER_MONTH * months
    for k in range(extra):
        n = len(history) + k
        days_ago = span - (k * (span - 1)) // extra
        created = _at(anchor, days_ago, rng)
        status = LEAD_STATUSES[k % len(LEAD_STATUSES)]
        line: dict[str, Any] = {
            **_person(rng, n, None),
            "external_id": f"HIST-L{n + 1:04d}",
            "source": LEAD_SOURCES[(k + 1) % len(LEAD_SOURCES)],
            "owner_email": reps[k % len(reps)],
            "status": status,
            "created_at": created.isoformat(),
        }
        if status != "new":
            contacted = created + timedelta(minutes=rng.randrange(5, 1440))
            line["first_contacted_at"] = min(contacted, anchor - timedelta(minutes=1)).isoformat()
        if status == "unqualified":
            line["status_reason"] = rng.choice(["no budget", "student", "wrong country"])
        lines.append(line)
    return lines


def _person(rng: random.Random, n: int, company: str | None) -> dict[str, Any]:
    given = rng.choice(("Li", "Wang", "Zhang", "Chen", "Liu", "Zhao", "Ada", "Jonas"))
    family = rng.choice(("Wei", "Na", "Jie", "Fang", "Hong", "Klein"))
    company = company or f"{rng.choice(COMPANIES).split(' ')[0]} 分公司 {n % 9 + 1}"
    return {
        "name": f"{given} {family}",
        "email": f"history{n:04d}@client{n % 23}.example.com",
        "company": company,
        "country": rng.choice(("CN", "CN", "CN", "HK", "SG", "DE")),
        "industry": rng.choice(("manufacturing", "retail", "software", "logistics", "education")),
    }


def month_starts(first: date, last: date) -> list[date]:
    """The first day of every month from `first`'s month to `last`'s month."""
    out: list[date] = []
    day = first.replace(day=1)
    while day <= last:
        out.append(day)
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return out
