"""Outbound webhooks as an attacker's tool: private targets refused at create, update and send
time (DNS rebinding included), the checked address pinned, answers bounded and never echoed."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
from arq import Retry
from sqlalchemy import select

from app.config import Settings
from app.main import create_app
from app.models.webhook import WebhookAttempt, WebhookDelivery
from app.services import webhook_targets
from app.state import AppState
from app.workers.webhooks import attempt
from tests.conftest import Org

PUBLIC_IP = "93.184.216.34"


@pytest.fixture
async def prod(settings: Settings, state: AppState) -> AsyncIterator[tuple[AppState, httpx.AsyncClient]]:
    """The app as production runs it: the SSRF guard on, https only, a 1 s overall deadline."""
    prod_settings = settings.model_copy(
        update={"env": "production", "webhook_allow_private": False, "webhook_timeout_seconds": 1.0}
    )
    prod_state = dataclasses.replace(state, settings=prod_settings)
    app = create_app(prod_settings, state=prod_state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield prod_state, c


class Resolver:
    """A DNS server the test controls: answers per name, changeable between calls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        if host not in self.answers:
            raise OSError("no such name")
        return self.answers[host]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://0.0.0.0/",
        "https://100.64.0.1/",
        "https://192.168.1.1:8443/",
        "https://[fe80::1]/",
        "https://internal.corp/",
        "https://unknown.invalid/",
        "http://receiver.example/",
    ],
)
async def test_private_or_plain_http_targets_are_refused_in_production(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setattr(
        webhook_targets,
        "resolve",
        Resolver({"internal.corp": ["10.1.2.3"], "receiver.example": [PUBLIC_IP]}),
    )
    _, client = prod
    r = await client.post("/v1/webhook-subscriptions", json={"url": url}, headers=org.auth())
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "url"
    assert r.json()["errors"][0]["code"] == "url_not_allowed"
    listed = await client.get("/v1/webhook-subscriptions", headers=org.auth())
    assert listed.json()["data"] == []


async def test_a_name_with_one_private_answer_is_refused_and_update_is_checked_too(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        webhook_targets,
        "resolve",
        Resolver({"receiver.example": [PUBLIC_IP], "mixed.example": [PUBLIC_IP, "127.0.0.1"]}),
    )
    _, client = prod
    r = await client.post(
        "/v1/webhook-subscriptions", json={"url": "https://mixed.example/"}, headers=org.auth()
    )
    assert r.status_code == 422
    r = await client.post(
        "/v1/webhook-subscriptions", json={"url": "https://receiver.example/hooks"}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    r = await client.patch(
        f"/v1/webhook-subscriptions/{sub_id}", json={"url": "https://169.254.169.254/"}, headers=org.auth()
    )
    assert r.status_code == 422, r.text
    r = await client.get(f"/v1/webhook-subscriptions/{sub_id}", headers=org.auth())
    assert r.json()["url"] == "https://receiver.example/hooks"


async def _delivery(state: AppState, org: Org, sub_id: str) -> uuid.UUID:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        delivery = WebhookDelivery(
            subscription_id=uuid.UUID(sub_id),
            outbox_id=uuid.uuid4(),
            event_type="lead.created",
            payload={"type": "lead.created", "data": {}},
        )
        session.add(delivery)
        await session.commit()
        return delivery.id


async def _attempts(state: AppState, org: Org, delivery_id: uuid.UUID) -> list[WebhookAttempt]:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        rows = await session.execute(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)  # type: ignore[arg-type]
        )
        return list(rows.scalars())


async def _subscribe(client: httpx.AsyncClient, org: Org) -> str:
    r = await client.post(
        "/v1/webhook-subscriptions", json={"url": "https://receiver.example/hooks"}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_a_name_that_rebinds_to_a_private_address_is_refused_at_send_time(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = Resolver({"receiver.example": [PUBLIC_IP]})
    monkeypatch.setattr(webhook_targets, "resolve", resolver)
    prod_state, client = prod
    sub_id = await _subscribe(client, org)
    resolver.answers["receiver.example"] = ["169.254.169.254"]  # the attacker's DNS changes its answer
    delivery_id = await _delivery(prod_state, org, sub_id)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route().mock(return_value=httpx.Response(200, text="metadata: secret"))
        with pytest.raises(Retry):
            await attempt({"state": prod_state}, delivery_id)
        assert route.call_count == 0
    [tried] = await _attempts(prod_state, org, delivery_id)
    assert tried.status_code is None and tried.response_body is None
    assert tried.error == "refused: the target address is not public"


async def test_the_checked_address_is_the_one_connected_to_with_the_host_name_kept(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = Resolver({"receiver.example": [PUBLIC_IP]})
    monkeypatch.setattr(webhook_targets, "resolve", resolver)
    prod_state, client = prod
    sub_id = await _subscribe(client, org)
    delivery_id = await _delivery(prod_state, org, sub_id)
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"https://{PUBLIC_IP}/hooks").mock(return_value=httpx.Response(204))
        assert (await attempt({"state": prod_state}, delivery_id)).startswith("done")
        request = route.calls[0].request
    assert request.headers["host"] == "receiver.example"
    assert request.extensions["sni_hostname"] == "receiver.example"
    assert resolver.calls == 2  # once at create, once (only) for the send


async def test_error_answers_and_exceptions_are_not_echoed(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_targets, "resolve", Resolver({"receiver.example": [PUBLIC_IP]}))
    prod_state, client = prod
    sub_id = await _subscribe(client, org)
    first = await _delivery(prod_state, org, sub_id)
    second = await _delivery(prod_state, org, sub_id)
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"https://{PUBLIC_IP}/hooks").mock(
            side_effect=[
                httpx.Response(500, text="redis_password=hunter2"),
                httpx.ConnectError("[Errno 111] connect to 10.0.0.7:6379 refused"),
            ]
        )
        for delivery_id in (first, second):
            with pytest.raises(Retry):
                await attempt({"state": prod_state}, delivery_id)
    [failed] = await _attempts(prod_state, org, first)
    assert failed.status_code == 500 and failed.response_body is None and failed.error == "HTTP 500"
    [broken] = await _attempts(prod_state, org, second)
    assert broken.status_code is None and broken.response_body is None
    assert broken.error == "connection failed"


async def test_an_endless_body_is_read_only_up_to_the_cap(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_targets, "resolve", Resolver({"receiver.example": [PUBLIC_IP]}))
    prod_state, client = prod
    sub_id = await _subscribe(client, org)
    delivery_id = await _delivery(prod_state, org, sub_id)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 1024
            yield b"x" * 1024

    with respx.mock() as mock:
        mock.post(f"https://{PUBLIC_IP}/hooks").mock(return_value=httpx.Response(200, content=endless()))
        await attempt({"state": prod_state}, delivery_id)
    [tried] = await _attempts(prod_state, org, delivery_id)
    assert tried.status_code == 200
    assert tried.response_body is not None and len(tried.response_body) <= 4096
    assert sent <= 8 * 1024


async def test_a_slow_drip_body_is_cut_by_one_overall_deadline(
    org: Org, prod: tuple[AppState, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_targets, "resolve", Resolver({"receiver.example": [PUBLIC_IP]}))
    prod_state, client = prod
    sub_id = await _subscribe(client, org)
    delivery_id = await _delivery(prod_state, org, sub_id)

    async def drip() -> AsyncIterator[bytes]:
        while True:  # one byte every 50 ms never trips a per-read timeout
            await asyncio.sleep(0.05)
            yield b"x"

    loop = asyncio.get_running_loop()
    started = loop.time()
    with respx.mock() as mock:
        mock.post(f"https://{PUBLIC_IP}/hooks").mock(return_value=httpx.Response(200, content=drip()))
        with pytest.raises(Retry):
            await attempt({"state": prod_state}, delivery_id)
    assert loop.time() - started < 3
    [tried] = await _attempts(prod_state, org, delivery_id)
    assert tried.error == "timeout" and tried.response_body is None


@pytest.mark.parametrize(
    ("header", "at_most"),
    [("9" * 400, 86_400.0), ("Wed, 21 Oct 2099 07:28:00 -0000", 86_400.0), ("soon", None)],
)
def test_retry_after_is_bounded(header: str, at_most: float | None) -> None:
    from app.services.webhooks import retry_after_seconds

    value = retry_after_seconds(header)
    assert value == at_most
