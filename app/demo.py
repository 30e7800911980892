"""`loudou demo`: a new organisation filled through the product's own API, deterministic for a seed.

Everything is made by calling the API in-process (the same routers, services, intake parsing,
dedupe, conversion, stage rules and quote workflow a client would go through), never by writing
rows directly: teams with a manager and reps each, intake sources of every kind, leads from every
channel (web form, signed webhook, Postmark and raw MIME email, CSV import, the API), first
contacts, conversions, deals at every stage with their stage history, quotes (some revised)
and the orders accepted quotes become. The same seed gives the same counts of everything.

Not made yet, because this branch has no such endpoints: sales targets, payments, dunning steps,
collections and metrics numbers; and every row is dated today (the API has no way to backdate).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.main import create_app
from app.services.organisation import create_organisation
from app.state import AppState

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


def _mime(name: str, address: str, subject: str, body: str, n: int) -> bytes:
    return (
        f"From: {name} <{address}>\r\nTo: sales@demo.loudou.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <demo-{n}@mail.demo.loudou.test>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


async def load_demo(settings: Settings, *, name: str = "Demo", seed: int = 1, months: int = 3) -> DemoResult:
    """Create the organisation `name` and fill it; the counts depend only on `seed` and `months`."""
    rng = random.Random(seed)  # noqa: S311 (demo data, not secrets)
    state = AppState.open(settings)
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
        app = create_app(settings.model_copy(update={"access_log": False}), state=state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://demo"
        ) as client:
            await _fill(_Api(client, created.api_key), rng, months, result)
        return result
    finally:
        await state.close()


async def _fill(api: _Api, rng: random.Random, months: int, result: DemoResult) -> None:
    reps: list[str] = []
    for team_name in ("华东销售 East", "华南销售 South"):
        manager = await api.call("POST", "/v1/users", json=_person(rng, "manager"))
        team = await api.call("POST", "/v1/teams", json={"name": team_name, "manager_id": manager["id"]})
        for _ in range(2):
            rep = await api.call("POST", "/v1/users", json=_person(rng, "rep") | {"team_id": team["id"]})
            reps.append(rep["id"])
    await api.call(
        "POST",
        "/v1/assignment-rules",
        json={
            "name": "Round robin",
            "position": 10,
            "conditions": [],
            "target_user_ids": reps,
            "strategy": "round_robin",
        },
    )
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
    listed = await api.call("GET", "/v1/leads", params={"limit": 200})
    lead_ids = [lead["id"] for lead in listed["data"]]
    deals: list[dict[str, Any]] = []
    for i, lead_id in enumerate(sorted(lead_ids)):
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
                    "expected_close_date": str(date.today() + timedelta(days=rng.randrange(10, 120))),
                },
            )
            deals.append(converted["deal"])
    stages = {s["key"]: s["id"] for s in (await api.call("GET", "/v1/pipelines"))[0]["stages"]}
    for i, deal in enumerate(deals):
        await _advance(api, rng, deal, STAGE_PLAN[i % len(STAGE_PLAN)], stages)
    result.counts = await _counts(api)


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
    """How many rows of each exported entity the organisation holds (from the export catalogue)."""
    counts: dict[str, int] = {}
    catalog = await api.call("GET", "/v1/export")
    for entity in catalog["entities"]:
        r = await api.client.get(
            f"/v1/export/{entity['name']}", params={"format": "ndjson", "limit": 1_000_000}, headers=api.auth
        )
        counts[entity["name"]] = len([line for line in r.content.splitlines() if line])
    return counts
