"""The public intake posts skip the generic middleware stack (app.lane.IntakeLane) and must answer
exactly as the stack did: request id, RateLimit headers, body limits, metrics and access log,
error answers; everything else still goes through the stack."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope, Send

from app import middleware, ratelimit
from app.config import Settings
from app.intake_lane import served_directly
from app.main import create_app
from app.routers import intake
from app.state import AppState
from tests.asgi import raw_post
from tests.conftest import Org
from tests.factories import make_source

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def app(settings: Settings, state: AppState) -> FastAPI:
    """An app of the test's own (its middleware stack is built on its first request)."""
    return create_app(settings, state=state)


@pytest.fixture
async def lenient(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the 500 answer instead of the re-raised exception (as a server would)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def event_of(org: Org, event_id: str) -> dict[str, Any]:
    r = await org.client.get(f"/v1/inbound-events/{event_id}", headers=org.auth())
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def events_of(org: Org, source: dict[str, Any]) -> list[dict[str, Any]]:
    r = await org.client.get(f"/v1/inbound-events?source_id={source['id']}", headers=org.auth())
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def requests_counted(handler: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "http_requests_total", {"handler": handler, "method": "POST", "status": status}
        )
        or 0.0
    )


def requests_timed(handler: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "http_request_duration_seconds_count", {"handler": handler, "method": "POST"}
        )
        or 0.0
    )


async def call(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> list[Message]:
    """One raw ASGI request with the whole `body` (such as one under a false Content-Length)."""
    return await raw_post(app, path, headers, [{"type": "http.request", "body": body, "more_body": False}])


async def test_a_valid_request_id_is_echoed_and_kept_with_the_event(org: Org) -> None:
    source = await make_source(org, "form")
    rid = uuid.uuid4().hex
    r = await org.client.post(
        source["endpoint"], json={"email": "rid@example.com"}, headers={"X-Request-ID": rid}
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == rid
    event = await event_of(org, r.json()["inbound_event_id"])
    assert event["headers"]["x-request-id"] == rid


async def test_an_invalid_request_id_is_replaced_everywhere(
    org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    """The id is generated anew (and the swap logged), then used for the answer's header, the
    problem's request_id and the request header the event keeps."""
    source = await make_source(org, "form")
    with caplog.at_level(logging.WARNING, logger="asgi_correlation_id"):
        r = await org.client.post(
            source["endpoint"], json={"name": "No Address"}, headers={"X-Request-ID": "not-a-uuid"}
        )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    rid = r.headers["x-request-id"]
    assert HEX_ID.match(rid) and r.json()["request_id"] == rid
    assert r.json()["instance"] == f"urn:request:{rid}"
    assert any(
        rid in record.getMessage() for record in caplog.records if record.name == "asgi_correlation_id"
    )
    event = await event_of(org, r.json()["inbound_event_id"])
    assert event["headers"]["x-request-id"] == rid


async def test_a_request_without_an_id_gets_one(org: Org) -> None:
    r = await org.client.post("/v1/intake/webhooks/no-such-key", content=b"{}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert HEX_ID.match(r.headers["x-request-id"]) and r.json()["request_id"] == r.headers["x-request-id"]


async def test_a_rate_limited_source_answers_with_ratelimit_headers(org: Org) -> None:
    # A window with a few seconds left could reset between the two posts.
    left = ratelimit.WINDOW_SECONDS - time.time() % ratelimit.WINDOW_SECONDS
    if left < 5:
        await asyncio.sleep(left + 0.05)
    source = await make_source(org, "form", rate_limit_per_minute=1)
    r = await org.client.post(source["endpoint"], json={"email": "first@example.com"})
    assert r.status_code == 201
    assert r.headers["ratelimit-policy"] == '"source";q=1;w=60'
    assert re.match(r'^"source";r=0;t=\d+$', r.headers["ratelimit"])
    r = await org.client.post(source["endpoint"], json={"email": "second@example.com"})
    # The 429 carries its own headers, not a second copy of them.
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert len(r.headers.get_list("ratelimit")) == 1 and len(r.headers.get_list("ratelimit-policy")) == 1


async def test_a_declared_over_limit_body_is_413_recorded_unread(
    org: Org, app: FastAPI, settings: Settings
) -> None:
    """The declared Content-Length is enough: the body is not read and the event keeps the size
    declared. An email source's own, larger limit applies to email posts."""
    form = await make_source(org, "form")
    declared = settings.max_body_bytes + 1
    headers = [(b"content-type", b"application/json"), (b"content-length", str(declared).encode())]
    sent = await call(app, httpx.URL(form["endpoint"]).path, headers, b'{"email": "big@example.com"}')
    assert sent[0]["status"] == 413
    (event,) = await events_of(org, form)
    assert event["status"] == "rejected" and event["http_status"] == 413
    assert event["body_size"] == declared
    email = await make_source(org, "email", provider="postmark")
    sent = await call(app, httpx.URL(email["endpoint"]).path, headers, b'{"nothing": "here"}')
    assert sent[0]["status"] == 422  # read and refused for its content, not its size


async def test_intake_posts_are_counted_timed_and_logged_by_route(
    org: Org, app: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    form = await make_source(org, "form")
    hook = await make_source(org, "webhook")
    forms, webhooks = "/v1/intake/forms/{key}", "/v1/intake/webhooks/{key}"
    before = (requests_counted(forms, "2xx"), requests_timed(forms), requests_counted(webhooks, "4xx"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.post(form["endpoint"], json={"email": "m@example.com"})).status_code == 201
        assert (await client.post(hook["endpoint"], json={})).status_code == 401  # unsigned
    after = (requests_counted(forms, "2xx"), requests_timed(forms), requests_counted(webhooks, "4xx"))
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1)
    lines = [line for line in capsys.readouterr().out.splitlines() if "/v1/intake/forms/***" in line]
    assert len(lines) == 1 and "201" in lines[0] and forms in lines[0]
    assert form["key"] not in lines[0]


async def test_an_unexpected_error_is_the_500_problem_and_the_event_is_kept(
    org: Org, lenient: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception escaping the endpoint after its commit: the app's last-resort handler answers
    (outside the request-id and rate-limit layers, as it always has), and logs the crash."""
    source = await make_source(org, "form")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr(intake, "respond", broken)
    rid = uuid.uuid4().hex
    before = requests_counted("/v1/intake/forms/{key}", "5xx")
    with caplog.at_level(logging.ERROR, logger="loudou.errors"):
        r = await lenient.post(
            source["endpoint"], json={"email": "crash@example.com"}, headers={"X-Request-ID": rid}
        )
    assert r.status_code == 500 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "internal_error" and r.json()["request_id"] == rid
    assert "x-request-id" not in r.headers and "ratelimit" not in r.headers
    assert requests_counted("/v1/intake/forms/{key}", "5xx") == before + 1
    (record,) = [rec for rec in caplog.records if rec.name == "loudou.errors"]
    assert record.getMessage() == "unhandled error" and record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    (event,) = await events_of(org, source)
    assert event["status"] == "created"


async def test_a_domain_error_raised_inside_is_its_problem_with_the_headers(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AppError escaping the endpoint is answered by its handler, inside the request-id and
    rate-limit layers (both headers present)."""
    from app.errors import ServiceUnavailable

    source = await make_source(org, "form", rate_limit_per_minute=1000)

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise ServiceUnavailable("Try later.", headers={"Retry-After": "3"})

    monkeypatch.setattr(intake, "respond", unavailable)
    r = await org.client.post(source["endpoint"], json={"email": "later@example.com"})
    assert r.status_code == 503 and r.json()["code"] == "service_unavailable"
    assert r.headers["retry-after"] == "3" and r.json()["request_id"] == r.headers["x-request-id"]
    assert r.headers["ratelimit-policy"] == '"source";q=1000;w=60'


async def test_only_intake_posts_skip_the_generic_stack(
    org: Org, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on one generic middleware: intake posts never reach it; the preflight, a path with
    more after the key, and the rest of the API still do, and answer as they always have."""
    seen: list[tuple[str, str]] = []
    through = middleware.ContentTypeMiddleware.__call__

    async def spy(self: middleware.ContentTypeMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append((scope["method"], scope["path"]))
        await through(self, scope, receive, send)

    monkeypatch.setattr(middleware.ContentTypeMiddleware, "__call__", spy)
    source = await make_source(org, "form", allowed_origins=["https://www.example.com"])
    path = httpx.URL(source["endpoint"]).path
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.post(path, json={"email": "lane@example.com"})
        assert r.status_code == 201
        r = await client.options(
            path, headers={"Origin": "https://www.example.com", "Access-Control-Request-Method": "POST"}
        )
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://www.example.com"
        assert HEX_ID.match(r.headers["x-request-id"])
        r = await client.post(path + "/more", json={})
        assert r.status_code == 404
        r = await client.post(path + "/", json={"email": "slash@example.com"})
        assert r.status_code == 307 and r.headers["location"].endswith(path)
        r = await client.post("/v1/leads", content=b"x", headers={**org.auth(), "Content-Type": "text/plain"})
        assert r.status_code == 415
    assert [(m, p) for m, p in seen if p.startswith(path) or p == "/v1/leads"] == [
        ("OPTIONS", path),
        ("POST", path + "/more"),
        ("POST", path + "/"),
        ("POST", "/v1/leads"),
    ]


def test_a_route_that_needs_fastapi_is_refused() -> None:
    """The lane calls endpoints directly only when FastAPI has nothing to do for them: the
    preflight (a session dependency) or a route with a body model would be refused at start."""
    (preflight,) = [r for r in intake.router.routes if isinstance(r, APIRoute) and r.name == "preflight_form"]
    with pytest.raises(ValueError, match="cannot be served directly"):
        served_directly(preflight)
    router = APIRouter()

    @router.post("/v1/intake/things/{key}")
    async def with_body(key: str, request: Request, body: dict[str, str]) -> Response:
        return Response()

    with pytest.raises(ValueError, match="cannot be served directly"):
        served_directly(router.routes[0])  # type: ignore[arg-type]
    posts = [r for r in intake.router.routes if isinstance(r, APIRoute) and r.methods == {"POST"}]
    assert [served_directly(r).name for r in posts] == ["submit_form", "receive_webhook", "receive_email"]
