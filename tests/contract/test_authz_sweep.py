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

import httpx
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.deps import ROLE_ORDER, Require, get_principal
from app.main import ROUTERS, openapi_document
from app.models.common import Role
from tests.conftest import Org

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
