"""`loudou demo`: a new organisation filled through the product's own API, deterministic for a seed.

Everything is made by calling the API in-process (the same routers, services, intake parsing,
dedupe, conversion, stage rules, quote workflow, history import, orders, payments and dunning a
client would go through), never by writing rows directly:

- the set-up: timezone Asia/Shanghai and base currency CNY, two teams with a manager and two reps
  each, a round-robin rule, monthly targets per rep and quarterly ones for a team, dated USD/CNY
  rates, a default dunning policy, the customers with their billing addresses and credit limits;
- today: leads from every channel (web form, signed webhook, Postmark and raw MIME email, CSV
  import, the API), first calls, conversions, deals walked stage by stage, quotes (some revised)
  and the orders accepted quotes become;
- the past (`months` months before today), brought in through the history import
  (`POST /v1/import/deals` and `/v1/import/leads`): deals with their stage histories, won, lost
  and open, and the leads they came from, plus leads that were worked or disqualified;
- the running contracts of the won deals, entered with their original dates (`POST /v1/orders`
  with a past `ordered_at`), then every day since replayed in order: the payments received (on
  time, late, partly; one reversed, one left for finance to confirm, one paying ahead into
  credit) and that day's dunning run (reminder emails, tasks, escalations, legal notices);
- what the worker would do (the demo does it for its own organisation, in-process): the
  assignment job of each live lead (the round robin, in the order the leads came in), the
  collections sweep (overdue statuses, ratings, risks), the daily pipeline snapshots, and the
  outbound webhooks of its events to two subscriptions answered by a receiver the demo serves
  itself, one accepting (delivered) and one answering 410 Gone (failed, subscription disabled).

The same seed and months give the same counts of everything (ids and dates differ), provided no
other worker handles the organisation's events meanwhile (a running `loudou dev` could assign the
live leads in another order and try the webhooks first).
"""

from __future__ import annotations

import asyncio
import base64
import csv
import dataclasses
import io
import json
import random
import time
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from arq.worker import Retry
from sqlalchemy import select
from sqlmodel import col
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import demo_history
from app.config import Settings
from app.db import scope_session
from app.main import create_app
from app.models.events import EVENT_TYPES
from app.models.outbox import OutboxEvent
from app.services.metrics import snapshots
from app.services.organisation import create_organisation
from app.services.receivables import sweep
from app.state import AppState
from app.workers import assignment as assignment_jobs
from app.workers import webhooks as webhook_jobs

TIMEZONE = "Asia/Shanghai"
CHANNELS = ("form", "webhook", "postmark", "mime", "import", "api")
INDUSTRIES = ("manufacturing", "retail", "software", "logistics", "education")
COUNTRIES = ("CN", "CN", "CN", "HK", "SG", "DE")
STAGE_PLAN = ("prospect", "first_contact", "needs_confirmed", "quote", "negotiation", "won", "lost")
POSTMARK_AUTH = ("demo", "demo-postmark-password")
GIVEN_NAMES = ("Li", "Wang", "Zhang", "Chen", "Ada", "Max")
FAMILY_NAMES = ("Wei", "Na", "Lee", "Kurz")


@dataclass
class DemoResult:
    """The organisation made, its admin key, and how many of each thing it holds."""

    org_id: str
    api_key: str
    counts: dict[str, int] = field(default_factory=dict)


class _Api:
    """The app called in-process with the admin's key; every answer must be a success."""

    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        r = await self.client.request(method, path, headers=headers, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} answered {r.status_code}: {r.text[:500]}")
        return (
            r.json()
            if r.content and r.headers.get("content-type", "").startswith("application/json")
            else None
        )

    async def all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of a paginated list."""
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.call(
                "GET", path, params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})}
            )
            rows.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return rows

    async def ndjson(self, path: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        """A history import; every line must land."""
        body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        report: dict[str, Any] = await self.call(
            "POST", path, content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        if report["failed"]:
            raise RuntimeError(f"{path} refused lines: {report['errors'][:3]}")
        return report


def _mime(name: str, address: str, subject: str, body: str, n: int) -> bytes:
    return (
        f"From: {name} <{address}>\r\nTo: sales@demo.loudou.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <demo-{n}@mail.demo.loudou.test>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


async def load_demo(settings: Settings, *, name: str = "Demo", seed: int = 1, months: int = 3) -> DemoResult:
    """Create the organisation `name` and fill it; the counts depend only on `seed` and `months`."""
    rng = random.Random(seed)  # noqa: S311 (demo data, not secrets)
    # The demo's own in-process app: no request log, no per-key rate limit on its own calls,
    # webhook targets on the receiver it serves itself (hooks.demo.loudou.test, never resolved).
    local = settings.model_copy(
        update={
            "access_log": False,
            "rate_limit_per_minute": max(settings.rate_limit_per_minute, 1_000_000),
            "webhook_allow_private": True,
            # Reminders to the demo's made-up customers are handed off as webhook events, never
            # queued for a configured SMTP server.
            "smtp_url": None,
        }
    )
    state = AppState.open(local)
    try:
        async with state.sessions() as session:
            created = await create_organisation(
                session,
                name=name,
                admin_email=f"admin-{uuid.uuid4().hex[:8]}@demo.loudou.test",
                admin_name="Admin",
            )
            await session.commit()
        result = DemoResult(org_id=str(created.org.id), api_key=created.api_key)
        app = create_app(local, state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://demo"
        ) as client:
            demo = _Demo(_Api(client, created.api_key), rng, months, state, created.org.id)
            await demo.fill()
            result.counts = await _counts(demo.api)
        return result
    finally:
        await state.close()


@dataclass
class _Rep:
    id: str
    email: str
    team_id: str


@dataclass
class _Plan:
    """A payment to record on a day: the installment, the amount, and what then happens to it."""

    day: date
    installment: dict[str, Any]
    account_id: str
    amount: Decimal
    currency: str
    reference: str
    extra: Decimal = Decimal(0)  # paid beyond the installment: the account's credit
    confirm: bool = True
    reverse_on: date | None = None


class _Demo:
    """One demo organisation being filled."""

    def __init__(
        self, api: _Api, rng: random.Random, months: int, state: AppState, org_id: uuid.UUID
    ) -> None:
        self.api, self.rng, self.months, self.state, self.org_id = api, rng, months, state, org_id
        self.tz = zoneinfo.ZoneInfo(TIMEZONE)
        self.today = datetime.now(self.tz).date()
        self.anchor = datetime.combine(self.today, datetime.min.time(), tzinfo=self.tz)
        self.reps: list[_Rep] = []
        self.teams: list[str] = []
        self.accounts: dict[str, str] = {}

    async def fill(self) -> None:
        await self.api.call(
            "PATCH",
            "/v1/organisation",
            json={
                "settings": {
                    "timezone": TIMEZONE,
                    "base_currency": "CNY",
                    "country": "CN",
                    "risk_overdue_amount": "20000.00",
                }
            },
        )
        await self.people()
        await self.plans()
        # Before the history: it works every lead it sees.
        await _live(self.api, self.rng, self.months, self.assign, self.today)
        deals = await self.import_history()
        await self.receivables(deals)
        await self.worker_duties()
        await self.webhooks()

    async def people(self) -> None:
        for team_name in ("华东销售 East", "华南销售 South"):
            manager = await self.api.call("POST", "/v1/users", json=_person(self.rng, "manager"))
            team = await self.api.call(
                "POST", "/v1/teams", json={"name": team_name, "manager_id": manager["id"]}
            )
            self.teams.append(team["id"])
            for _ in range(2):
                rep = await self.api.call(
                    "POST", "/v1/users", json=_person(self.rng, "rep") | {"team_id": team["id"]}
                )
                self.reps.append(_Rep(rep["id"], rep["email"], team["id"]))
        await self.api.call(
            "POST",
            "/v1/assignment-rules",
            json={
                "name": "Round robin",
                "position": 10,
                "conditions": [],
                "target_user_ids": [r.id for r in self.reps],
                "strategy": "round_robin",
            },
        )

    async def plans(self) -> None:
        """Targets (销售目标), dated exchange rates, the dunning policy, the customers."""
        first = self.today - timedelta(days=self.months * 30 + 1)
        months = demo_history.month_starts(first, self.today)
        for start in months:
            for rep in self.reps:
                await self.api.call(
                    "POST",
                    "/v1/targets",
                    json={
                        "user_id": rep.id,
                        "period": "month",
                        "period_start": start.isoformat(),
                        "amount": f"{self.rng.randrange(8, 16) * 10000}.00",
                        "currency": "CNY",
                        "count": self.rng.randrange(1, 4),
                    },
                )
            usd = Decimal("7.05") + Decimal(self.rng.randrange(0, 30)) / 100
            for frm, to, rate in (
                ("USD", "CNY", usd),
                ("CNY", "USD", (1 / usd).quantize(Decimal("0.000001"))),
            ):
                await self.api.call(
                    "POST",
                    "/v1/exchange-rates",
                    json={"date": start.isoformat(), "from": frm, "to": to, "rate": str(rate)},
                )
        quarters = sorted({date(m.year, (m.month - 1) // 3 * 3 + 1, 1) for m in months})
        for start in quarters:  # the East team has its own; the South team's is its members' sum
            await self.api.call(
                "POST",
                "/v1/targets",
                json={
                    "team_id": self.teams[0],
                    "period": "quarter",
                    "period_start": start.isoformat(),
                    "amount": "900000.00",
                    "currency": "CNY",
                    "count": 12,
                },
            )
        await self.api.call(
            "POST",
            "/v1/dunning-policies",
            json={
                "name": "标准催款 Standard",
                "is_default": True,
                "steps": [
                    {"offset_days": -3, "action": "email"},
                    {"offset_days": 1, "action": "email", "language": "en"},
                    {"offset_days": 15, "action": "owner_task"},
                    {"offset_days": 30, "action": "manager_task"},
                    {"offset_days": 60, "action": "legal_notice"},
                ],
            },
        )
        for i, account in enumerate(demo_history.account_names(self.months)):
            body: dict[str, Any] = {
                "name": account,
                "owner_id": self.reps[i % len(self.reps)].id,
                "billing_email": f"ap{i}@customer-{i}.example.com",
                "country": "DE" if "Bergmann" in account else "CN",
            }
            if i % 3 == 0:
                body |= {"credit_limit": "300000.00", "credit_currency": "CNY"}
            self.accounts[account] = (await self.api.call("POST", "/v1/accounts", json=body))["id"]

    async def import_history(self) -> list[tuple[demo_history.HistoryDeal, dict[str, Any]]]:
        """The past months through the history import; the won deals with their live rows."""
        emails = [r.email for r in self.reps]
        past = demo_history.deals(self.rng, self.anchor, self.months, emails, list(self.accounts))
        await self.api.ndjson("/v1/import/deals", [d.line for d in past])
        await self.api.ndjson(
            "/v1/import/leads", demo_history.leads(self.rng, self.anchor, self.months, emails, past)
        )
        by_name = {d["name"]: d for d in await self.api.all("/v1/deals", status="won")}
        return [(d, by_name[d.name]) for d in past if d.status == "won"]

    async def receivables(self, won: list[tuple[demo_history.HistoryDeal, dict[str, Any]]]) -> None:
        """The won deals' contracts with their original dates, then every day since replayed:
        the payments received that day, reversals, and that day's dunning run."""
        installments: list[tuple[dict[str, Any], str, int]] = []
        for past, deal in won:
            assert past.closed_at is not None
            ordered = past.closed_at.astimezone(self.tz).date()
            order = await self.api.call(
                "POST",
                "/v1/orders",
                json={
                    "account_id": self.accounts[past.account],
                    "deal_id": deal["id"],
                    "owner_id": deal["owner_id"],
                    "currency": past.currency,
                    "ordered_at": ordered.isoformat(),
                    "lines": [
                        {
                            "description": f"合同 Contract: {past.name}",
                            "quantity": "1",
                            "unit_price": past.amount,
                        }
                    ],
                    "payment_terms": [
                        {"percent": "30", "due_days": 0},
                        {"percent": "40", "due_days": 30},
                        {"percent": "30", "due_days": 60},
                    ],
                },
            )
            profile = list(self.accounts).index(past.account) % 4  # 0, 1: prompt; 2: slow; 3: poor
            installments.extend(
                (inst, self.accounts[past.account], profile) for inst in order["installments"]
            )
        plans = self._payment_plans(installments)
        start = min((p.day for p in plans), default=self.today)
        first_order = min((date.fromisoformat(i["due_date"]) for i, _, _ in installments), default=self.today)
        day = min(start, first_order)
        while day <= self.today:
            for plan in (p for p in plans if p.day == day):
                await self._pay(plan)
            for plan in (p for p in plans if p.reverse_on == day):
                await self.api.call(
                    "POST",
                    f"/v1/payments/{plan.installment['payment_id']}/reverse",
                    json={"reason": "退票 the cheque bounced", "reversed_on": day.isoformat()},
                )
            await self.api.call("POST", "/v1/dunning/run", params={"as_of": day.isoformat()})
            day += timedelta(days=1)
        overdue = [
            i
            for i, _, profile in installments
            if profile == 3 and date.fromisoformat(i["due_date"]) < self.today
        ]
        unpaid = {p.installment["id"] for p in plans}
        promised = next((i for i in overdue if i["id"] not in unpaid), None)
        if promised is not None:  # the customer promised to pay next week: dunning pauses till then
            await self.api.call(
                "POST",
                f"/v1/installments/{promised['id']}/promise",
                json={
                    "date": (self.today + timedelta(days=7)).isoformat(),
                    "note": "财务说下周付款 AP promised next week",
                },
            )

    def _payment_plans(self, installments: list[tuple[dict[str, Any], str, int]]) -> list[_Plan]:
        """Who pays what when: prompt payers on or just before the due date, slow ones weeks late,
        poor ones late, partly or not at all; nothing after today."""
        plans: list[_Plan] = []
        for n, (inst, account_id, profile) in enumerate(installments):
            due = date.fromisoformat(inst["due_date"])
            roll = self.rng.random()
            amount = Decimal(inst["amount"])
            if profile in (0, 1):
                day = (
                    due - timedelta(days=self.rng.randrange(0, 4))
                    if roll < 0.85
                    else due + timedelta(days=self.rng.randrange(3, 20))
                )
            elif profile == 2:
                day = due + timedelta(days=self.rng.randrange(10, 50)) if roll < 0.8 else due
            else:
                if roll < 0.5:
                    continue  # never paid: overdue
                day = due + timedelta(days=self.rng.randrange(5, 40))
                if roll < 0.7:
                    amount = (amount / 2).quantize(Decimal("0.01"))
            day = max(day, date.fromisoformat(inst["due_date"]) - timedelta(days=3))
            if day > self.today:
                continue
            plans.append(_Plan(day, inst, account_id, amount, inst["currency"], f"TT-{n + 1:05d}"))
        plans.sort(key=lambda p: (p.day, p.reference))
        if plans:
            # The oldest payment is a cheque that bounced a week later: the installment is open again.
            plans[0].reverse_on = min(plans[0].day + timedelta(days=7), self.today)
            plans[0].reference = "CHQ-" + plans[0].reference[3:]
        if len(plans) > 2:
            plans[-1].confirm = False  # the newest waits for finance (pending_confirmation)
            plans[1].extra = Decimal("1000.00")  # paid ahead: the rest is the account's credit
        return plans

    async def _pay(self, plan: _Plan) -> None:
        payment = await self.api.call(
            "POST",
            "/v1/payments",
            json={
                "account_id": plan.account_id,
                "amount": str(plan.amount + plan.extra),
                "currency": plan.currency,
                "received_at": plan.day.isoformat(),
                "method": "cheque" if plan.reference.startswith("CHQ") else "bank_transfer",
                "reference": plan.reference,
                "allocations": [{"installment_id": plan.installment["id"], "amount": str(plan.amount)}],
            },
        )
        plan.installment["payment_id"] = payment["id"]
        if plan.confirm:
            await self.api.call("POST", f"/v1/payments/{payment['id']}/confirm")

    async def assign(self, lead_ids: list[str]) -> None:
        """The worker's assignment job for each new lead (its `lead.created` event), in the order
        the leads came in, so the round robin gives each rep the same leads for the same seed."""
        async with self.state.sessions() as session:
            scope_session(session, self.org_id)
            events = {
                str(e.payload["lead_id"]): e.id
                for e in (
                    await session.execute(
                        select(OutboxEvent).where(col(OutboxEvent.event_type) == "lead.created")
                    )
                ).scalars()
            }
        ctx = {"state": self.state, "redis": self.state.redis}
        for lead_id in lead_ids:
            if lead_id in events:
                await self._assign_one(ctx, str(events[lead_id]))

    async def _assign_one(self, ctx: dict[str, Any], outbox_id: str) -> None:
        """One job run; when a running worker's batch holds the lead (`loudou dev` beside the
        demo, or the test session's worker), wait for that batch's decision as arq would."""
        for _ in range(100):
            try:
                await assignment_jobs.assign_lead(ctx, outbox_id, str(self.org_id))
                return
            except Retry as retry:
                await asyncio.sleep((retry.defer_score or 200) / 1000)

    async def _attempt(self, ctx: dict[str, Any], delivery_id: uuid.UUID) -> None:
        """Deliver one webhook through the worker's own job, trying again while it is not due
        yet (a running worker, `loudou dev`'s, may have tried it first and scheduled a retry).
        A delivery still not done after about 10 s is left to its schedule."""
        for _ in range(20):
            try:
                await webhook_jobs.attempt(ctx, delivery_id, self.org_id)
                return
            except Retry as retry:
                await asyncio.sleep(min((retry.defer_score or 200) / 1000, 0.5))

    async def worker_duties(self) -> None:
        """What the worker's crons would have done for the organisation: the collections sweep
        (overdue statuses, today's dunning, ratings, risks) and a daily pipeline snapshot for
        every day of the past year."""
        async with self.state.sessions() as session:
            scope_session(session, self.org_id)
            await sweep.daily(session, self.org_id, smtp=bool(self.state.settings.smtp_url))
            await session.commit()
        async with self.state.sessions() as session:
            scope_session(session, self.org_id)
            # Every day of the metrics' default window (a year): the default trend reads snapshots only.
            await snapshots.snapshot_missing_days(session, self.org_id, days=366)
            await session.commit()

    async def webhooks(self) -> None:
        """Two subscriptions on a receiver the demo serves in-process, and the organisation's events
        delivered to them by the worker's own jobs (fan-out, signed POST, attempt log)."""
        secrets: dict[str, str] = {}
        erp = await self.api.call(
            "POST",
            "/v1/webhook-subscriptions",
            json={
                "url": "https://hooks.demo.loudou.test/erp",
                "description": "ERP and mail gateway (the demo's in-process receiver, switched off after it)",
                "event_types": [
                    "deal.won",
                    "quote.accepted",
                    "payment.confirmed",
                    "payment.reversed",
                    "installment.paid",
                    "installment.overdue",
                    "dunning.message",
                ],
            },
        )
        secrets["/erp"] = erp["secret"]
        legacy = await self.api.call(
            "POST",
            "/v1/webhook-subscriptions",
            json={
                "url": "https://hooks.demo.loudou.test/legacy-bi",
                "description": "Old BI endpoint (answers 410 Gone: disabled on its first delivery)",
                "event_types": ["deal.won", "deal.lost"],
            },
        )
        wanted = sorted({*erp["event_types"], *legacy["event_types"]} & set(EVENT_TYPES))
        receiver = httpx.AsyncClient(transport=httpx.ASGITransport(app=_receiver(secrets)), timeout=10.0)
        ctx = {"state": dataclasses.replace(self.state, http=receiver), "redis": self.state.redis}
        try:
            async with self.state.sessions() as session:
                scope_session(session, self.org_id)
                events = list(
                    (
                        await session.execute(
                            select(col(OutboxEvent.id))
                            # Only the types subscribed to: fan-out makes nothing of the others.
                            .where(col(OutboxEvent.event_type).in_(wanted))
                            .order_by(col(OutboxEvent.created_at), col(OutboxEvent.id))
                        )
                    ).scalars()
                )
            for event_id in events:
                await webhook_jobs.fan_out_webhooks(ctx, str(event_id), str(self.org_id))
            for sub in (legacy, erp):
                rows = await self.api.all(f"/v1/webhook-subscriptions/{sub['id']}/deliveries")
                for row in sorted(rows, key=lambda r: (r["created_at"], r["event_type"], r["id"])):
                    await self._attempt(ctx, uuid.UUID(row["id"]))
        finally:
            await receiver.aclose()
        # Nothing answers at hooks.demo.loudou.test once the demo has finished.
        await self.api.call("PATCH", f"/v1/webhook-subscriptions/{erp['id']}", json={"active": False})


def _receiver(secrets: dict[str, str]) -> Starlette:
    """The demo's webhook receiver: /erp verifies the Standard Webhooks signature (204, or 400
    when it does not verify); /legacy-bi is gone (410)."""

    async def erp(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
        try:
            Webhook(secrets["/erp"]).verify(body, headers)
        except WebhookVerificationError:
            return Response(status_code=400)
        return Response(status_code=204)

    async def gone(request: Request) -> Response:
        return Response(status_code=410)

    return Starlette(
        routes=[Route("/erp", erp, methods=["POST"]), Route("/legacy-bi", gone, methods=["POST"])]
    )


async def _live(
    api: _Api,
    rng: random.Random,
    months: int,
    assign: Callable[[list[str]], Awaitable[None]],
    today: date,
) -> None:
    """Today: leads from every channel, assigned by the rule, first calls, conversions, deals
    walked to every stage."""
    sources = {
        "form": await api.call(
            "POST", "/v1/intake-sources", json={"kind": "form", "name": "Website contact form"}
        ),
        "webhook": await api.call(
            "POST", "/v1/intake-sources", json={"kind": "webhook", "name": "Ad platform"}
        ),
        "postmark": await api.call(
            "POST",
            "/v1/intake-sources",
            json={
                "kind": "email",
                "name": "Sales inbox (Postmark)",
                "provider": "postmark",
                "basic_auth_username": POSTMARK_AUTH[0],
                "basic_auth_password": POSTMARK_AUTH[1],
            },
        ),
        "mime": await api.call(
            "POST", "/v1/intake-sources", json={"kind": "email", "name": "Forwarded mail", "provider": "mime"}
        ),
    }
    leads = months * 12
    lead_ids: list[str] = []
    imported: list[dict[str, str]] = []
    for n in range(leads):
        channel = CHANNELS[n % len(CHANNELS)]
        person = {
            "name": f"{rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}",
            "email": f"lead{n:04d}@customer{n % 17}.example.com",
            "company": f"Customer {n % 17} Ltd",
            "country": rng.choice(COUNTRIES),
            "industry": rng.choice(INDUSTRIES),
        }
        lead_id = await _intake(api, channel, sources, person, n, imported)
        if lead_id:
            lead_ids.append(lead_id)
    if imported:
        body = io.StringIO()
        writer = csv.DictWriter(body, fieldnames=list(imported[0]))
        writer.writeheader()
        writer.writerows(imported)
        await api.call(
            "POST",
            "/v1/leads/import",
            files={"file": ("leads.csv", body.getvalue().encode(), "text/csv")},
            data={"mapping": json.dumps({k: k for k in imported[0]})},
        )
    # In the order they came in (their emails are numbered): the same leads are called and converted.
    listed = sorted(await api.all("/v1/leads"), key=lambda lead: str(lead["email"]))
    lead_ids = [lead["id"] for lead in listed]
    await assign(lead_ids)
    deals: list[dict[str, Any]] = []
    for i, lead_id in enumerate(lead_ids):
        if i % 2 == 0:  # half the leads are called
            await api.call(
                "POST", f"/v1/leads/{lead_id}/activities", json={"kind": "call", "subject": "Intro call"}
            )
        if i % 3 == 0:  # a third become customers with a deal
            converted = await api.call(
                "POST",
                f"/v1/leads/{lead_id}/convert",
                json={
                    "amount": f"{rng.randrange(5, 500) * 100}.00",
                    "currency": rng.choice(["CNY", "CNY", "USD"]),
                    "expected_close_date": str(today + timedelta(days=rng.randrange(10, 120))),
                },
            )
            deals.append(converted["deal"])
    stages = {s["key"]: s["id"] for s in (await api.call("GET", "/v1/pipelines"))[0]["stages"]}
    for i, deal in enumerate(deals):
        await _advance(api, rng, deal, STAGE_PLAN[i % len(STAGE_PLAN)], stages)


def _person(rng: random.Random, role: str) -> dict[str, Any]:
    suffix = f"{rng.randrange(10**6):06d}"
    return {"email": f"{role}-{suffix}@demo.loudou.test", "name": f"{role.title()} {suffix}", "role": role}


async def _intake(
    api: _Api,
    channel: str,
    sources: dict[str, Any],
    person: dict[str, str],
    n: int,
    imported: list[dict[str, str]],
) -> str | None:
    if channel == "form":
        answer = await api.call(
            "POST", sources["form"]["endpoint"], json=person, headers={"Accept": "application/json"}
        )
        return str(answer["lead_id"])
    if channel == "webhook":
        body = json.dumps({"type": "lead", "data": person})
        msg_id, now = f"msg_demo_{n}_{uuid.uuid4().hex[:6]}", datetime.now(UTC)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(sources["webhook"]["secret"]).sign(msg_id, now, body),
            "content-type": "application/json",
        }
        answer = await api.call("POST", sources["webhook"]["endpoint"], content=body, headers=headers)
        return str(answer["lead_id"])
    if channel == "postmark":
        payload = {
            "FromName": person["name"],
            "From": person["email"],
            "FromFull": {"Email": person["email"], "Name": person["name"]},
            "To": "sales@demo.loudou.test",
            "Subject": f"Quote request from {person['company']}",
            "MessageID": f"demo-postmark-{n}-{time.time_ns()}",
            "TextBody": f"Hello, we would like a quote.\n\n{person['name']}\n{person['company']}",
            "Headers": [],
        }
        basic = base64.b64encode(":".join(POSTMARK_AUTH).encode()).decode()
        answer = await api.call(
            "POST", sources["postmark"]["endpoint"], json=payload, headers={"Authorization": f"Basic {basic}"}
        )
        return str(answer["lead_id"])
    if channel == "mime":
        raw = _mime(
            person["name"], person["email"], "Pricing question", f"Please call me.\n{person['company']}", n
        )
        answer = await api.call(
            "POST", sources["mime"]["endpoint"], content=raw, headers={"content-type": "message/rfc822"}
        )
        return str(answer["lead_id"])
    if channel == "import":
        imported.append(person)
        return None
    answer = await api.call("POST", "/v1/leads", json=person)
    return str(answer["id"])


async def _advance(
    api: _Api, rng: random.Random, deal: dict[str, Any], target: str, stages: dict[str, str]
) -> None:
    """Walk a deal stage by stage to `target` (history on every step), with a quote from the
    quote stage on and an accepted, revised quote (an order) when it is won."""
    path = ["first_contact", "needs_confirmed", "quote", "negotiation"]
    goal = path.index(target) + 1 if target in path else (len(path) if target == "won" else 1)
    for key in path[:goal]:
        await api.call("POST", f"/v1/deals/{deal['id']}/move", json={"stage_id": stages[key]})
        if key == "quote":
            quote = await api.call(
                "POST",
                "/v1/quotes",
                json={
                    "deal_id": deal["id"],
                    "payment_terms": [
                        {"percent": "30", "due": "on_acceptance"},
                        {"percent": "70", "due_days": 30},
                    ],
                    "lines": [
                        {
                            "description": "Licences",
                            "quantity": str(rng.randrange(1, 20)),
                            "unit_price": "980.00",
                            "tax_rate": "13",
                        },
                        {
                            "description": "实施服务 Implementation",
                            "quantity": "1",
                            "unit_price": "5000.00",
                            "tax_rate": "6",
                        },
                    ],
                },
            )
            await api.call("POST", f"/v1/quotes/{quote['id']}/submit")
            await api.call("POST", f"/v1/quotes/{quote['id']}/send")
            deal["quote_id"] = quote["id"]
    if target == "won":
        revised = await api.call(  # the customer bargained: 5 % off in the second revision
            "POST", f"/v1/quotes/{deal['quote_id']}/revise", json={"discount_percent": "5"}
        )
        await api.call("POST", f"/v1/quotes/{revised['id']}/submit")
        await api.call("POST", f"/v1/quotes/{revised['id']}/send")
        await api.call("POST", f"/v1/quotes/{revised['id']}/accept")  # the order; the deal is won
    elif target == "lost":
        await api.call(
            "POST", f"/v1/deals/{deal['id']}/lost", json={"reason": rng.choice(["price", "competitor"])}
        )


async def _counts(api: _Api) -> dict[str, int]:
    """How many rows of each exported entity the organisation holds (from the export catalogue),
    then what the export does not carry, from the list endpoints."""
    counts: dict[str, int] = {}
    catalog = await api.call("GET", "/v1/export")
    for entity in catalog["entities"]:
        r = await api.client.get(
            f"/v1/export/{entity['name']}", params={"format": "ndjson", "limit": 1_000_000}, headers=api.auth
        )
        counts[entity["name"]] = len([line for line in r.content.splitlines() if line])
    payments = await api.all("/v1/payments")
    counts.setdefault("payments", len(payments))
    for status in ("confirmed", "pending_confirmation", "reversed"):
        counts[f"payments_{status}"] = sum(1 for p in payments if p["status"] == status)
    installments = await api.all("/v1/installments")
    counts.setdefault("installments", len(installments))
    counts["installments_overdue"] = sum(1 for i in installments if i["status"] == "overdue")
    counts["targets"] = len(await api.all("/v1/targets"))
    counts["exchange_rates"] = len(await api.all("/v1/exchange-rates"))
    counts["dunning_policies"] = len(await api.call("GET", "/v1/dunning-policies"))
    log = [row for i in installments for row in await api.call("GET", f"/v1/installments/{i['id']}/dunning")]
    counts["dunning_log"] = len(log)
    counts["dunning_fired"] = sum(1 for row in log if row["outcome"] == "fired")
    counts["outbound_messages"] = len(await api.all("/v1/outbound-messages"))
    counts["risks"] = len((await api.call("GET", "/v1/receivables/risks"))["data"])
    for sub in await api.all("/v1/webhook-subscriptions"):
        for delivery in await api.all(f"/v1/webhook-subscriptions/{sub['id']}/deliveries"):
            key = f"webhook_deliveries_{delivery['status']}"
            counts[key] = counts.get(key, 0) + 1
    return counts
