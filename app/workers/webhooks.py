"""Outbound webhook jobs: fan an event out to subscriptions, deliver one, sweep what is due."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import structlog
from arq import Retry

from app.models.base import utcnow
from app.services import webhook_targets
from app.services import webhooks as webhooks_out
from app.services.webhook_targets import TargetPolicy
from app.state import AppState
from app.workers.jobs import job_session, load_event

log = structlog.get_logger("loudou.webhooks")


async def fan_out_webhooks(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> int:
    """Create the deliveries of one outbox event (each then gets its own deliver job)."""
    event = await load_event(ctx, outbox_id, org_id)
    if event is None:
        return 0
    async with job_session(ctx, event.org_id) as session:
        created = await webhooks_out.fan_out(session, event)
    return len(created)


async def deliver_webhook(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> str:
    """Deliver the webhook named by a `webhook.deliver` outbox event; retried via arq's Retry."""
    event = await load_event(ctx, outbox_id, org_id)
    if event is None:
        return "gone"
    return await attempt(ctx, uuid.UUID(event.payload["delivery_id"]), event.org_id)


async def retry_webhook(ctx: dict[str, Any], delivery_id: str, org_id: str | None = None) -> str:
    """Deliver a webhook the sweep found due (its first wake-up was lost with Redis)."""
    return await attempt(ctx, uuid.UUID(delivery_id), uuid.UUID(org_id) if org_id else None)


async def attempt(ctx: dict[str, Any], delivery_id: uuid.UUID, org_id: uuid.UUID | None = None) -> str:
    """Claim, POST outside any transaction, record; raise Retry for the next try."""
    state: AppState = ctx["state"]
    async with job_session(ctx, None) as session:
        claimed = await webhooks_out.claim(session, delivery_id, org_id=org_id)
    if claimed is None:
        return "nothing to do"
    if isinstance(claimed, float):
        raise Retry(defer=max(claimed, 0.05))
    outcome = await _post(state, claimed)
    async with job_session(ctx, None) as session:
        delay = await webhooks_out.record(
            session, claimed, outcome, schedule=state.settings.webhook_retry_schedule
        )
    log.info(
        "webhook.attempt",
        delivery_id=str(delivery_id),
        attempt=claimed.attempt,
        status_code=outcome.status_code,
        error=outcome.error,
        retry_in=delay,
    )
    if delay is not None:
        raise Retry(defer=delay)
    return f"done after {claimed.attempt} attempt(s)"


async def _post(state: AppState, claimed: webhooks_out.Claimed) -> webhooks_out.Outcome:
    """One try under one overall deadline: pin the checked address, stream at most a few KiB back.

    Nothing the receiver (or the network) says is stored beyond a status and a fixed reason, so a
    subscription cannot be used to read internal services or scan ports."""
    settings = state.settings
    started = time.perf_counter()

    def outcome(**fields: Any) -> webhooks_out.Outcome:
        return webhooks_out.Outcome(duration_ms=int((time.perf_counter() - started) * 1000), **fields)

    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            target = await webhook_targets.pin(claimed.url, TargetPolicy.from_settings(settings))
            headers = webhooks_out.signed_headers(claimed, now=utcnow())
            headers["accept-encoding"] = "identity"  # what is read is what was sent: no gzip bomb
            if target.host_header:
                headers["host"] = target.host_header
            request = state.http.build_request(
                "POST",
                target.url,
                content=claimed.body,
                headers=headers,
                extensions={"sni_hostname": target.sni_hostname} if target.sni_hostname else None,
            )
            response = await state.http.send(request, stream=True, follow_redirects=False)
            try:
                excerpt = await _read_at_most(response, settings.webhook_max_response_bytes)
            finally:
                await response.aclose()
    except webhook_targets.TargetRefused as exc:
        return outcome(status_code=None, body=None, error=f"refused: {exc}")
    except TimeoutError:
        return outcome(status_code=None, body=None, error="timeout")
    except httpx.TimeoutException:
        return outcome(status_code=None, body=None, error="timeout")
    except httpx.HTTPError:
        return outcome(status_code=None, body=None, error="connection failed")
    success = response.is_success
    return outcome(
        status_code=response.status_code,
        body=excerpt.decode("utf-8", "replace") if success else None,
        error=None if success else f"HTTP {response.status_code}",
        retry_after=webhooks_out.retry_after_seconds(response.headers.get("retry-after")),
    )


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of the body; the rest is never downloaded."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


async def sweep_webhooks(ctx: dict[str, Any]) -> int:
    """Re-send deliveries whose wake-up never came (Redis lost it, or arq gave up retrying)."""
    async with job_session(ctx, None) as session:
        due = await webhooks_out.due_deliveries(session, older_than=timedelta(seconds=30))
    redis = ctx["redis"]
    for delivery_id, org_id, attempts in due:
        await redis.enqueue_job(
            "retry_webhook", str(delivery_id), str(org_id), _job_id=f"retry_webhook:{delivery_id}:{attempts}"
        )
    return len(due)
