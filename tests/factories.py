"""Test data made through the API, one helper per thing: organisations come from conftest."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from app.models.outbox import OutboxEvent
from app.state import AppState
from tests.conftest import Org


async def make_lead(org: Org, key: str | None = None, **fields: Any) -> dict[str, Any]:
    """A lead created through the API (as the key's user, the admin by default); a fresh email
    unless one is given."""
    body = {"email": f"lead-{uuid.uuid4().hex[:8]}@acme.example", **fields}
    r = await org.client.post("/v1/leads", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def lead_of(org: Org, lead_id: str) -> dict[str, Any]:
    """A lead as the admin reads it."""
    r = await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


async def make_source(org: Org, kind: str, **fields: Any) -> dict[str, Any]:
    """An intake source of `kind` (form, email, webhook) created by the admin."""
    body = {"kind": kind, "name": f"{kind} source", **fields}
    r = await org.client.post("/v1/intake-sources", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    data = dict(r.json())
    assert data["endpoint"].endswith(f"/{data['key']}")
    return data


async def stages(org: Org, key: str | None = None) -> dict[str, str]:
    """{stage key: stage id} of the organisation's default pipeline."""
    r = await org.client.get("/v1/pipelines", headers=org.auth(key))
    assert r.status_code == 200, r.text
    pipeline = r.json()[0]
    assert pipeline["is_default"]
    return {s["key"]: s["id"] for s in pipeline["stages"]} | {"_pipeline": pipeline["id"]}


async def make_deal(org: Org, key: str | None = None, **fields: Any) -> dict[str, Any]:
    """A deal created through the API (as the given key's user, the admin by default)."""
    body = {"name": f"Deal {uuid.uuid4().hex[:6]}", **fields}
    r = await org.client.post("/v1/deals", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_team(org: Org) -> str:
    """A new team's id."""
    r = await org.client.post("/v1/teams", json={"name": f"Team {uuid.uuid4().hex[:6]}"}, headers=org.auth())
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def events(state: AppState, org: Org, event_type: str) -> list[dict[str, Any]]:
    """Payloads of the organisation's outbox events of a type, oldest first."""
    async with state.sessions() as session:
        rows = await session.execute(
            select(OutboxEvent)
            .where(col(OutboxEvent.org_id) == uuid.UUID(org.id), col(OutboxEvent.event_type) == event_type)
            .order_by(col(OutboxEvent.created_at))
            .execution_options(cross_tenant=True)
        )
        return [dict(e.payload) for e in rows.scalars()]


# Collections (回款): accounts, direct orders, payments.


async def make_account(org: Org, key: str | None = None, **fields: Any) -> dict[str, Any]:
    """An account created through the API."""
    body = {"name": f"Acme {uuid.uuid4().hex[:6]}", **fields}
    r = await org.client.post("/v1/accounts", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def make_order(
    org: Org,
    account_id: str,
    *,
    total: str = "10000.00",
    currency: str = "CNY",
    terms: list[dict[str, Any]] | None = None,
    ordered_at: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """A direct order of one free-text line worth `total` (no tax)."""
    body: dict[str, Any] = {
        "account_id": account_id,
        "currency": currency,
        "lines": [{"description": "Licence", "quantity": "1", "unit_price": total}],
        "payment_terms": terms or [{"percent": "30", "due_days": 0}, {"percent": "70", "due_days": 30}],
    }
    if ordered_at:
        body["ordered_at"] = ordered_at
    r = await org.client.post("/v1/orders", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def pay(
    org: Org,
    account_id: str,
    amount: str,
    *,
    currency: str = "CNY",
    received_at: str,
    key: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Record a payment (status depends on the organisation's confirmation setting)."""
    body = {
        "account_id": account_id,
        "amount": amount,
        "currency": currency,
        "received_at": received_at,
        **extra,
    }
    r = await org.client.post("/v1/payments", json=body, headers=org.auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def confirm(org: Org, payment_id: str, key: str | None = None) -> dict[str, Any]:
    """Confirm a payment (the admin by default)."""
    r = await org.client.post(f"/v1/payments/{payment_id}/confirm", headers=org.auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def installments(org: Org, order_id: str, key: str | None = None) -> list[dict[str, Any]]:
    """An order's installments in sequence."""
    r = await org.client.get(f"/v1/orders/{order_id}", headers=org.auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["installments"])


async def set_settings(org: Org, **settings: Any) -> None:
    """Change organisation settings."""
    r = await org.client.patch("/v1/organisation", json={"settings": settings}, headers=org.auth())
    assert r.status_code == 200, r.text
