"""Outbound webhooks: subscriptions, fan-out of outbox events into deliveries, signing, retries.

Deliveries are rows: a job claims one (a short lease), POSTs it outside any transaction, then
records the attempt and the next step (done, retry at a time, failed, subscription disabled).
Redis only carries the wake-up; a sweep re-sends whatever is due, so losing Redis loses nothing.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from standardwebhooks.webhooks import Webhook

from app.errors import Forbidden
from app.models.base import utcnow
from app.models.events import EVENT_TYPES, WebhookDeliver, envelope
from app.models.outbox import OutboxEvent
from app.models.webhook import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    WebhookSubscriptionCreate,
    WebhookSubscriptionUpdate,
)
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services import audit, outbox, webhook_targets
from app.services.common import apply_changes, get_or_404
from app.services.webhook_targets import TargetPolicy

DELIVER_EVENT = "webhook.deliver"
LEASE = timedelta(seconds=30)
ROTATION_GRACE = timedelta(hours=24)
NO_RETRY_4XX_EXCEPT = {408, 429}


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only an admin can manage webhook subscriptions.")


async def create_subscription(
    session: AsyncSession, principal: Principal, data: WebhookSubscriptionCreate, *, policy: TargetPolicy
) -> WebhookSubscription:
    """Subscribe a URL to event types; the secret is returned once by the router."""
    _admin(principal)
    await webhook_targets.check(str(data.url), policy)
    sub = WebhookSubscription(
        url=str(data.url),
        description=data.description,
        event_types=data.event_types,
        filter=data.filter,
        secret=new_secret(),
    )
    session.add(sub)
    await session.flush()
    audit.record(
        session,
        actor=principal,
        entity="webhook_subscription",
        entity_id=sub.id,
        action="create",
        changes={"url": [None, sub.url], "event_types": [None, sub.event_types]},
    )
    return sub


async def list_subscriptions(
    session: AsyncSession, principal: Principal, page: PageParams
) -> tuple[list[WebhookSubscription], str | None]:
    """The organisation's subscriptions."""
    _admin(principal)
    return await paginate(
        session,
        select(WebhookSubscription),
        page,
        id_column=col(WebhookSubscription.id),
        sortable={"created_at": col(WebhookSubscription.created_at)},
    )


async def get_subscription(
    session: AsyncSession, principal: Principal, sub_id: uuid.UUID
) -> WebhookSubscription:
    """One subscription."""
    _admin(principal)
    return await get_or_404(session, WebhookSubscription, sub_id, what="webhook subscription")


async def update_subscription(
    session: AsyncSession,
    principal: Principal,
    sub_id: uuid.UUID,
    data: WebhookSubscriptionUpdate,
    *,
    expected_version: int | None,
    policy: TargetPolicy,
) -> WebhookSubscription:
    """Change the URL, types, filter; `active: true` re-enables one a 410 disabled."""
    sub = await get_subscription(session, principal, sub_id)
    changes = data.model_dump(exclude_unset=True)
    if "url" in changes and changes["url"] is not None:
        changes["url"] = str(changes["url"])
        await webhook_targets.check(changes["url"], policy)
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("active") is True:
        changes["disabled_reason"] = None
    diff = apply_changes(sub, changes, expected_version=expected_version)
    if diff:
        audit.record(
            session,
            actor=principal,
            entity="webhook_subscription",
            entity_id=sub.id,
            action="update",
            changes=diff,
        )
    await session.flush()
    return sub


async def delete_subscription(
    session: AsyncSession, principal: Principal, sub_id: uuid.UUID, *, expected_version: int | None
) -> None:
    """Remove a subscription and its delivery log."""
    sub = await get_subscription(session, principal, sub_id)
    apply_changes(sub, {}, expected_version=expected_version)
    await session.delete(sub)
    audit.record(session, actor=principal, entity="webhook_subscription", entity_id=sub.id, action="delete")
    await session.flush()


async def rotate_secret(
    session: AsyncSession, principal: Principal, sub_id: uuid.UUID
) -> WebhookSubscription:
    """A new secret; for 24 h deliveries carry signatures with both (Standard Webhooks rotation)."""
    sub = await get_subscription(session, principal, sub_id)
    sub.previous_secret = sub.secret
    sub.previous_secret_expires_at = utcnow() + ROTATION_GRACE
    sub.secret = new_secret()
    sub.version += 1
    sub.updated_at = utcnow()
    audit.record(
        session, actor=principal, entity="webhook_subscription", entity_id=sub.id, action="rotate_secret"
    )
    await session.flush()
    return sub


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    sub_id: uuid.UUID,
    page: PageParams,
    *,
    status: str | None = None,
) -> tuple[list[tuple[WebhookDelivery, list[WebhookAttempt]]], str | None]:
    """A subscription's deliveries, newest first, each with its attempts."""
    await get_subscription(session, principal, sub_id)
    stmt = select(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == sub_id)
    if status:
        stmt = stmt.where(col(WebhookDelivery.status) == status)
    rows, next_cursor = await paginate(
        session,
        stmt,
        page,
        id_column=col(WebhookDelivery.id),
        sortable={"created_at": col(WebhookDelivery.created_at)},
    )
    attempts = await _attempts(session, [d.id for d in rows])
    return [(d, attempts.get(d.id, [])) for d in rows], next_cursor


async def _attempts(
    session: AsyncSession, delivery_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[WebhookAttempt]]:
    out: dict[uuid.UUID, list[WebhookAttempt]] = {}
    if not delivery_ids:
        return out
    rows = await session.execute(
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id).in_(delivery_ids))
        .order_by(col(WebhookAttempt.number))
    )
    for attempt in rows.scalars():
        out.setdefault(attempt.delivery_id, []).append(attempt)
    return out


async def replay_delivery(
    session: AsyncSession, principal: Principal, sub_id: uuid.UUID, delivery_id: uuid.UUID
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """Send a delivery again (same id and body), whatever its state; attempts keep counting."""
    await get_subscription(session, principal, sub_id)
    delivery = await get_or_404(session, WebhookDelivery, delivery_id, what="delivery")
    if delivery.subscription_id != sub_id:
        await get_or_404(session, WebhookDelivery, uuid.uuid4(), what="delivery")
    delivery.status = "pending"
    delivery.next_attempt_at = utcnow()
    delivery.locked_until = None
    await outbox.emit(session, WebhookDeliver(delivery_id=delivery.id))
    audit.record(session, actor=principal, entity="webhook_delivery", entity_id=delivery.id, action="replay")
    await session.flush()
    return delivery, (await _attempts(session, [delivery.id])).get(delivery.id, [])


def _matches(sub: WebhookSubscription, event: OutboxEvent) -> bool:
    if "*" not in sub.event_types and event.event_type not in sub.event_types:
        return False
    return all(event.payload.get(key) == value for key, value in (sub.filter or {}).items())


async def fan_out(session: AsyncSession, event: OutboxEvent) -> list[uuid.UUID]:
    """One delivery per matching active subscription (idempotent: a re-run adds none)."""
    if event.event_type not in EVENT_TYPES:
        return []
    subs = (
        await session.execute(select(WebhookSubscription).where(col(WebhookSubscription.active).is_(True)))
    ).scalars()
    created: list[uuid.UUID] = []
    for sub in subs:
        if not _matches(sub, event):
            continue
        delivery_id = uuid.uuid4()
        body = envelope(
            delivery_id=delivery_id,
            event_type=event.event_type,
            created_at=event.created_at,
            org_id=event.org_id,
            data=event.payload,
        )
        inserted = (
            await session.execute(
                insert(WebhookDelivery)
                .values(
                    id=delivery_id,
                    org_id=event.org_id,
                    subscription_id=sub.id,
                    outbox_id=event.id,
                    event_type=event.event_type,
                    payload=body,
                    status="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["org_id", "subscription_id", "outbox_id"])
                .returning(col(WebhookDelivery.id))
            )
        ).scalar_one_or_none()
        if inserted is not None:
            created.append(inserted)
            await outbox.emit(session, WebhookDeliver(delivery_id=inserted), org_id=event.org_id)
    return created


@dataclass(frozen=True)
class Claimed:
    """A delivery leased for one attempt, with what is needed to send it."""

    delivery_id: uuid.UUID
    org_id: uuid.UUID
    url: str
    body: bytes
    secrets: tuple[str, ...]
    attempt: int


async def claim(
    session: AsyncSession, delivery_id: uuid.UUID, *, org_id: uuid.UUID | None = None
) -> Claimed | float | None:
    """Lease a due delivery for one attempt; a float is the seconds until it is due; None: nothing to do.

    With `org_id` (every job passes it) the look-up is one primary-key probe (org_id, id)."""
    now = utcnow()
    stmt = select(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id)
    if org_id is not None:
        stmt = stmt.where(col(WebhookDelivery.org_id) == org_id)
    delivery = (
        await session.execute(stmt.with_for_update(skip_locked=True).execution_options(cross_tenant=True))
    ).scalar_one_or_none()
    if delivery is None or delivery.status in ("succeeded", "failed"):
        return None
    if delivery.status == "in_flight" and delivery.locked_until and delivery.locked_until > now:
        return None  # another worker is sending it right now
    if delivery.next_attempt_at > now:
        return (delivery.next_attempt_at - now).total_seconds()
    sub = (
        await session.execute(
            select(WebhookSubscription)
            .where(
                col(WebhookSubscription.org_id) == delivery.org_id,
                col(WebhookSubscription.id) == delivery.subscription_id,
            )
            .execution_options(cross_tenant=True)
        )
    ).scalar_one()
    if not sub.active:
        delivery.status = "failed"
        delivery.last_error = "subscription disabled"
        return None
    delivery.status = "in_flight"
    delivery.locked_until = now + LEASE
    delivery.attempts += 1
    keys = [sub.secret]
    if sub.previous_secret and sub.previous_secret_expires_at and sub.previous_secret_expires_at > now:
        keys.append(sub.previous_secret)
    return Claimed(
        delivery_id=delivery.id,
        org_id=delivery.org_id,
        url=sub.url,
        body=json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode(),
        secrets=tuple(keys),
        attempt=delivery.attempts,
    )


def signed_headers(claimed: Claimed, *, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers: id (stable across retries), timestamp of this try, signatures."""
    msg_id = str(claimed.delivery_id)
    text = claimed.body.decode()
    signatures = " ".join(Webhook(key).sign(msg_id, now, text) for key in claimed.secrets)
    return {
        "content-type": "application/json",
        "user-agent": "Loudou-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
    }


@dataclass(frozen=True)
class Outcome:
    """What one HTTP try gave: a status (None when no response) and the error or body excerpt."""

    status_code: int | None
    body: str | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None


def next_delay(schedule: list[float], attempt: int, retry_after: float | None) -> float | None:
    """Seconds until the next try after `attempt` tries, ±10 % jitter; None when tries are used up."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    delay = base * random.uniform(0.9, 1.1)  # noqa: S311 (jitter, not security)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def record(
    session: AsyncSession, claimed: Claimed, outcome: Outcome, *, schedule: list[float]
) -> float | None:
    """Log the attempt and move the delivery on; returns seconds until the retry, if any."""
    session.info["org_id"] = claimed.org_id
    session.add(
        WebhookAttempt(
            delivery_id=claimed.delivery_id,
            number=claimed.attempt,
            status_code=outcome.status_code,
            response_body=(outcome.body or "")[:2000] or None,
            error=(outcome.error or "")[:2000] or None,
            duration_ms=outcome.duration_ms,
        )
    )
    delivery = await get_or_404(session, WebhookDelivery, claimed.delivery_id, what="delivery")
    delivery.locked_until = None
    delivery.last_status_code = outcome.status_code
    delivery.last_error = outcome.error
    code = outcome.status_code
    if code is not None and 200 <= code < 300:
        delivery.status = "succeeded"
        delivery.succeeded_at = utcnow()
        return None
    if code == 410:
        delivery.status = "failed"
        await session.execute(
            update(WebhookSubscription)
            .where(col(WebhookSubscription.id) == delivery.subscription_id)
            .values(active=False, disabled_reason="the receiver answered 410 Gone", updated_at=utcnow())
        )
        return None
    if code is not None and 400 <= code < 500 and code not in NO_RETRY_4XX_EXCEPT:
        delivery.status = "failed"
        return None
    delay = next_delay(schedule, claimed.attempt, outcome.retry_after)
    if delay is None:
        delivery.status = "failed"
        return None
    delivery.status = "retrying"
    delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return delay


async def due_deliveries(
    session: AsyncSession, *, older_than: timedelta, limit: int = 500
) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """Deliveries that should have been tried by now (their wake-up was lost): (id, org_id, attempts)."""
    now = utcnow()
    rows = await session.execute(
        select(col(WebhookDelivery.id), col(WebhookDelivery.org_id), col(WebhookDelivery.attempts))
        .where(
            or_(
                (col(WebhookDelivery.status).in_(("pending", "retrying")))
                & (col(WebhookDelivery.next_attempt_at) < now - older_than),
                (col(WebhookDelivery.status) == "in_flight") & (col(WebhookDelivery.locked_until) < now),
            )
        )
        .limit(limit)
        .execution_options(cross_tenant=True)
    )
    return [(row[0], row[1], row[2]) for row in rows]


async def organisations_subscribed(session: AsyncSession) -> set[uuid.UUID]:
    """Organisations with an active webhook subscription."""
    rows = await session.execute(
        select(col(WebhookSubscription.org_id))
        .where(col(WebhookSubscription.active).is_(True))
        .distinct()
        .execution_options(cross_tenant=True)
    )
    return {row[0] for row in rows}


MAX_RETRY_AFTER = 86_400.0


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta form; an HTTP date is read as 'not before then'), at most a day:
    a huge or zone-less value must not overflow the schedule or keep a delivery in flight."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value[:12]), MAX_RETRY_AFTER)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - utcnow()).total_seconds()), MAX_RETRY_AFTER)
