"""Health, readiness, metrics, and problem+json for errors outside any route."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from app.main import create_app
from app.state import AppState


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_readyz_checks_database_and_redis(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "not_found" and r.json()["status"] == 404


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    r = await client.delete("/healthz")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 405


async def test_metrics_exposes_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "http_requests_total" in r.text


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    rid = "0123456789abcdef0123456789abcdef"
    r = await client.get("/v1/me", headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    assert r.json()["request_id"] == rid


async def test_metrics_need_the_token_when_one_is_set(settings: Settings, state: AppState) -> None:
    import dataclasses

    from app.main import create_app

    for env, token, sent, expected in (
        ("development", "scrape-me", None, 401),
        ("development", "scrape-me", "Bearer wrong", 401),
        ("development", "scrape-me", "Bearer scrape-me", 200),
        ("production", None, None, 404),
    ):
        configured = settings.model_copy(update={"env": env, "metrics_token": token and SecretStr(token)})
        app = create_app(configured, state=dataclasses.replace(state, settings=configured))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            r = await c.get("/metrics", headers={"Authorization": sent} if sent else {})
        assert r.status_code == expected, (env, token, sent, r.text[:200])


async def test_one_timing_wrapper_counts_and_logs_each_request(
    settings: Settings, state: AppState, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings, state=state)
    path = f"/v1/timing-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        before = _sample((await c.get("/metrics")).text, 'handler="unmatched"')
        assert (await c.get(path)).status_code == 404
        after = _sample((await c.get("/metrics")).text, 'handler="unmatched"')
    assert after == before + 1
    lines = [line for line in capsys.readouterr().out.splitlines() if path in line]
    assert len(lines) == 1 and "404" in lines[0]


def _sample(text: str, label: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and label in line
    )
