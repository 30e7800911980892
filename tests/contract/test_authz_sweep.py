"""The authorisation sweep, generated from the OpenAPI document and the routes' dependencies
(OWASP API1 broken object level authorisation, API5 broken function level authorisation).

The table of what each operation needs is read off the routes: the `Require(scope, role)`
dependency in its dependant tree (app/deps.py), and whether it authenticates at all. Every
operation in the document is in the table and the test fails on one that is not. For each:
no credentials -> 401; every role below the one it needs -> 403; a key of an admin without the
needed scope -> 403; another organisation's ids in the path -> 404."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.engine import make_url

from app.deps import ROLE_ORDER, Require, get_principal
from app.main import ROUTERS, openapi_document
from app.models.common import Role
from tests.conftest import Org, wait_for

# Operations anyone may call, and why (each has its own protection or reveals nothing).
PUBLIC = {
    ("GET", "/healthz"): "process liveness for load balancers; says nothing about data",
    ("GET", "/readyz"): "readiness (database, redis) for orchestrators; says nothing about data",
    ("POST", "/v1/auth/token"): "login: the credential is the email and password in the body",
    (
        "POST",
        "/v1/intake/forms/{key}",
    ): "web form posts: the intake source's key in the URL is the credential",
    ("OPTIONS", "/v1/intake/forms/{key}"): "CORS preflight of the web form post (no data)",
    (
        "POST",
        "/v1/intake/webhooks/{key}",
    ): "marketing tools: key in the URL plus a Standard Webhooks signature",
    ("POST", "/v1/intake/email/{key}"): "inbound e-mail providers: key in the URL (and provider signature)",
}
# Authenticated, with no scope or role to narrow: who am I.
ANY_CALLER = {("GET", "/v1/me"): "every valid credential may read its own identity"}


@dataclass(frozen=True)
class Needs:
    """What one operation requires of its caller."""

    authenticated: bool
    require: Require | None


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def authorisation_table() -> dict[tuple[str, str], Needs]:
    """(METHOD, document path) -> what it needs, from every route's dependency tree."""
    table: dict[tuple[str, str], Needs] = {}
    for router in ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            calls = [d.call for d in _dependencies(route.dependant)]
            requires = [c for c in calls if isinstance(c, Require)]
            assert len(requires) <= 1, f"{route.path}: one Require per operation"
            needs = Needs(authenticated=get_principal in calls, require=requires[0] if requires else None)
            assert route.methods is not None
            for method in route.methods:
                table[(method, route.path.replace(":uuid}", "}"))] = needs
    return table


TABLE = authorisation_table()
DOCUMENT = openapi_document()


def _document_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}


def test_the_table_covers_every_operation_in_the_document() -> None:
    assert set(TABLE) == _document_operations()


def test_only_the_listed_operations_are_public_or_unscoped() -> None:
    public = {op for op, needs in TABLE.items() if not needs.authenticated}
    assert public == set(PUBLIC), "a new public operation must be listed in PUBLIC, with why"
    unscoped = {op for op, needs in TABLE.items() if needs.authenticated and needs.require is None}
    assert unscoped == set(ANY_CALLER), "an authenticated operation needs a Require(scope) dependency"


def _request_kwargs(method: str, path: str) -> dict[str, Any]:
    """A body of the declared media type (its content does not matter: authorisation comes first)."""
    op = DOCUMENT["paths"][path][method.lower()]
    content = op.get("requestBody", {}).get("content", {})
    if not content or "application/json" in content:
        return {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    media = next(iter(content))
    if media == "multipart/form-data":
        return {"files": {"file": ("x.csv", b"email\n", "text/csv")}}
    return {"content": b"{}\n", "headers": {"Content-Type": media}}


def _fill(path: str, ids: dict[str, str] | None = None) -> str:
    return re.sub(r"{(\w+)}", lambda m: (ids or {}).get(m.group(1), str(uuid.uuid4())), path)


async def _call(
    client: httpx.AsyncClient, method: str, path: str, key: str | None, url: str
) -> httpx.Response:
    kwargs = _request_kwargs(method, path)
    headers = dict(kwargs.pop("headers", {}))
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return await client.request(method, url, headers=headers, **kwargs)


async def _key(org: Org, user_id: str, scopes: list[str]) -> str:
    r = await org.client.post(
        "/v1/api-keys", json={"name": "narrow", "user_id": user_id, "scopes": scopes}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


async def test_roles_below_and_keys_without_the_scope_are_refused(org: Org) -> None:
    keys = {Role.admin: org.admin_key}
    for role in (Role.manager, Role.rep, Role.viewer):
        _, keys[role] = await org.add_user(role.value)
    # Keys of the admin that carry one unrelated scope each.
    narrow = {
        "audit:read": await _key(org, org.admin_id, ["webhooks:read"]),
        "other": await _key(org, org.admin_id, ["audit:read"]),
    }
    wrong: list[str] = []
    checked = 0
    for (method, path), needs in sorted(TABLE.items()):
        if not needs.authenticated:
            continue
        url = _fill(path)
        r = await _call(org.client, method, path, None, url)
        if r.status_code != 401:
            wrong.append(f"{method} {path} without credentials: {r.status_code}")
        if needs.require is None:
            continue
        below = ROLE_ORDER[: ROLE_ORDER.index(needs.require.min_role)]
        for role in below:
            r = await _call(org.client, method, path, keys[role], url)
            if r.status_code != 403:
                wrong.append(
                    f"{method} {path} as {role.value} (needs {needs.require.min_role.value}): {r.status_code}"
                )
        key = narrow["audit:read" if needs.require.scope == "audit:read" else "other"]
        r = await _call(org.client, method, path, key, url)
        if r.status_code != 403:
            wrong.append(f"{method} {path} with a key without `{needs.require.scope}`: {r.status_code}")
        checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked == len(TABLE) - len(PUBLIC) - len(ANY_CALLER)


# The table behind each path id (by name, and by path where one name serves two resources).
def _table(path: str, name: str) -> str:
    by_path = {
        ("/v1/assignment-rules/", "rule_id"): "assignment_rules",
        ("/v1/scoring-rules/", "rule_id"): "scoring_rules",
        ("/v1/followup-policies/", "policy_id"): "followup_policies",
        ("/v1/dunning-policies/", "policy_id"): "dunning_policies",
        ("/v1/inbound-events/", "event_id"): "inbound_events",
        ("/v1/diagnostics/outbox/", "event_id"): "outbox",
    }
    for (prefix, param), table in by_path.items():
        if path.startswith(prefix) and name == param:
            return table
    return {
        "user_id": "users",
        "team_id": "teams",
        "key_id": "api_keys",
        "lead_id": "leads",
        "task_id": "activities",
        "source_id": "intake_sources",
        "sub_id": "webhook_subscriptions",
        "delivery_id": "webhook_deliveries",
        "pipeline_id": "pipelines",
        "stage_id": "stages",
        "account_id": "accounts",
        "contact_id": "contacts",
        "deal_id": "deals",
        "product_id": "products",
        "quote_id": "quotes",
        "order_id": "orders",
        "installment_id": "installments",
        "payment_id": "payments",
        "target_id": "sales_targets",
        "rate_id": "exchange_rates",
    }[name]


# Path parameters that are not an organisation's row ids, and why they are not swept here.
NOT_IDS = {
    "key": "an intake source's public key (the credential of the public intake posts)",
    "entity": "the name of an exported table (`leads`, `deals`, …), the same in every organisation",
}


async def _rows_of(database_url: str, org_id: str, tables: set[str]) -> dict[str, str]:
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        found = {}
        for table in sorted(tables):
            row = await conn.fetchval(
                f"SELECT id::text FROM {table} WHERE org_id = $1 LIMIT 1", uuid.UUID(org_id)
            )
            if row is not None:
                found[table] = row
        return found
    finally:
        await conn.close()


def _example_body(method: str, path: str) -> dict[str, Any]:
    """The operation's documented example body, so the request is well formed and only the path
    id decides the answer."""
    op = DOCUMENT["paths"][path][method.lower()]
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return _request_kwargs(method, path)
    if "$ref" in schema:
        schema = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    examples = schema.get("examples") or [{}]
    return {"json": examples[0]}


@pytest.mark.slow
async def test_another_organisations_ids_answer_404(
    org: Org, settings: Any, database_url: str, worker: None
) -> None:
    from app.demo import load_demo

    other = await load_demo(settings, name=f"Other {uuid.uuid4().hex[:6]}", seed=3, months=1)
    their = Org(client=org.client, id=other.org_id, admin_id="", admin_key=other.api_key)
    await _fill_the_rest(their)

    async def delivered() -> bool:
        found = await _rows_of(database_url, other.org_id, {"webhook_deliveries"})
        return bool(found)

    await wait_for(delivered, timeout=30)
    swept = {
        (method, path): needs
        for (method, path), needs in TABLE.items()
        if needs.authenticated and set(re.findall(r"{(\w+)}", path)) - set(NOT_IDS)
    }
    tables = {_table(path, name) for _, path in swept for name in re.findall(r"{(\w+)}", path)}
    rows = await _rows_of(database_url, other.org_id, tables)
    assert tables - set(rows) == set(), f"the other organisation has no row in {tables - set(rows)}"
    wrong = []
    for method, path in sorted(swept):
        ids = {name: rows[_table(path, name)] for name in re.findall(r"{(\w+)}", path)}
        kwargs = _example_body(method, path)
        r = await org.client.request(method, _fill(path, ids), headers=org.auth(), **kwargs)
        if r.status_code != 404:
            wrong.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)
    # Their own admin reaches the same rows (the ids are real, not merely unknown).
    r = await org.client.get(f"/v1/leads/{rows['leads']}", headers=their.auth())
    assert r.status_code == 200


async def _fill_the_rest(their: Org) -> None:
    """What the demo organisation does not have yet: one of each remaining resource."""

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await their.client.post(path, json=body, headers=their.auth())
        assert r.status_code in (200, 201, 202), (path, r.text)
        created: dict[str, Any] = r.json()
        return created

    await post("/v1/products", {"sku": "SKU-1", "name": "Licence", "unit_price": "100.00", "currency": "CNY"})
    await post(
        "/v1/scoring-rules", {"name": "Big", "field": "industry", "operator": "eq", "value": "x", "points": 5}
    )
    await post(
        "/v1/webhook-subscriptions", {"url": "http://127.0.0.1:9/hook", "event_types": ["lead.created"]}
    )
    await post("/v1/leads", {"name": "投递 Delivery", "email": f"hook-{uuid.uuid4().hex[:6]}@example.com"})
    await post("/v1/diagnostics/ping", {})
    for path in ("/v1/followup-policies", "/v1/dunning-policies", "/v1/exchange-rates"):
        await post(path, _example_body("POST", path)["json"])
    r = await their.client.get("/v1/users", headers=their.auth(), params={"limit": 200})
    rep = next(u for u in r.json()["data"] if u["role"] == "rep")
    await post("/v1/targets", _example_body("POST", "/v1/targets")["json"] | {"user_id": rep["id"]})
    r = await their.client.get("/v1/accounts", headers=their.auth())
    account = r.json()["data"][0]["id"]
    await post("/v1/orders", _example_body("POST", "/v1/orders")["json"] | {"account_id": account})
    payment = {"account_id": account, "received_at": "2026-01-05"}
    await post("/v1/payments", _example_body("POST", "/v1/payments")["json"] | payment)
