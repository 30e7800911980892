"""Helpers for the collections tests: accounts, direct orders, payments through the API."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Org


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
