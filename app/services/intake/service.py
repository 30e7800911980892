"""The intake pipeline: every request becomes an inbound event (raw body, kept headers) before it
is verified, parsed, mapped, normalised and ingested; the event is written in the same
transaction as the lead, its touch and its outbox row (for a new lead, in the same statement).

Rejections are outcomes, not exceptions: the event is kept with its reason and the caller
answers 4xx while the request's transaction still commits, so nothing that reached us is lost.
If the lead work fails unexpectedly, it is rolled back and the event alone is committed, as
rejected with the error, ready for replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from standardwebhooks.webhooks import Webhook

from app import ratelimit
from app.db import scope_session
from app.errors import (
    AppError,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    database_unavailable,
    unstorable,
)
from app.models.base import build, utcnow
from app.models.intake import (
    EventStatus,
    InboundEvent,
    IntakeResult,
    IntakeSource,
    SignatureVerdict,
    SourceKind,
)
from app.models.lead import LeadSource, phone_note
from app.services import cache as intake_cache
from app.services.intake.payloads import JSON_TYPES, media_type, parse_body, parse_json
from app.services.leads.ingest import ingest, ingest_direct
from app.services.leads.normalise import LeadInput, map_payload, normalise
from app.state import AppState

log = structlog.get_logger("loudou.intake")

# Headers worth keeping with the raw body (never Authorization or cookies).
KEPT_HEADERS = (
    "content-type",
    "content-length",
    "user-agent",
    "origin",
    "referer",
    "accept",
    "x-forwarded-for",
    "x-real-ip",
    "x-request-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)
LEAD_SOURCE = {
    SourceKind.form: LeadSource.web_form,
    SourceKind.email: LeadSource.email,
    SourceKind.webhook: LeadSource.webhook,
}
STATUS_CODES = {
    EventStatus.created: 201,
    EventStatus.merged: 200,
    EventStatus.activity: 200,
    EventStatus.spam: 202,
}


class FirstRejected(AppError):
    """A repeated event id whose first delivery was rejected: the same answer again."""

    status, code, title = 422, "rejected", "Rejected"


@dataclass
class RequestMeta:
    """What the intake endpoint kept of the HTTP request."""

    headers: dict[str, str]
    remote: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str | None:
        """The Content-Type header as sent."""
        return self.headers.get("content-type")


@dataclass
class Outcome:
    """An intake answer: the stored event, the status code, the JSON result or the error."""

    event: InboundEvent
    status_code: int
    result: IntakeResult
    error: AppError | None = None
    written: bool = False  # the event row was already inserted (with its new lead)


async def open_source(session: AsyncSession, key: str, kind: SourceKind) -> IntakeSource:
    """The active source with this public key; binds the session to its organisation."""
    source = await intake_cache.source_by_key(session, key)
    if source is None or source.kind != kind or not source.active or source.deleted_at is not None:
        raise NotFound("No active intake source has this key.")
    scope_session(session, source.org_id)
    return source


async def rate_limit(state: AppState, source: IntakeSource, address: str | None) -> ratelimit.Decision | None:
    """One-minute windows per source and per client address, shared by every API process through
    Redis (a local count while Redis is down; intake goes on): 429 + Retry-After past either,
    else the tighter one's standing for the answer's RateLimit headers."""
    limit = source.rate_limit_per_minute
    return await ratelimit.check(
        state.redis,
        [
            ratelimit.Limit(
                f"loudou:rl:src:{source.id}",
                limit,
                "source",
                f"This source accepts {limit} requests a minute.",
            ),
            ratelimit.address_limit(state.settings, address),
        ],
    )


def start_event(
    source: IntakeSource, meta: RequestMeta, body: bytes | None, *, body_size: int
) -> InboundEvent:
    """The inbound event (raw body and kept headers), built before anything is parsed.

    It is added to the session with its outcome (`settle`), in the same transaction as the lead;
    if the lead work fails, the transaction is rolled back and the event alone is written."""
    headers = {k: v for k, v in meta.headers.items() if k in KEPT_HEADERS}
    headers.update(meta.extra_headers)
    if meta.remote:
        headers["remote_addr"] = meta.remote
    event = build(
        InboundEvent,
        org_id=source.org_id,
        source_id=source.id,
        kind=source.kind,
        provider=source.provider,
        content_type=(meta.content_type or "")[:200] or None,
        headers=headers,
        body=body,
        body_size=body_size,
        signature=SignatureVerdict.not_required,
    )
    return event


def clone(event: InboundEvent) -> InboundEvent:
    """A fresh copy of an event whose transaction was rolled back, to be written again."""
    values = {c.key: getattr(event, c.key) for c in InboundEvent.__table__.columns}  # type: ignore[attr-defined]
    return build(InboundEvent, **values)


def settle(session: AsyncSession, outcome: Outcome) -> Outcome:
    """Add the event with its outcome to the session (it is committed with the request)."""
    if not outcome.written:
        session.add(outcome.event)
    return outcome


def _result(event: InboundEvent, **extra: Any) -> IntakeResult:
    return IntakeResult(inbound_event_id=event.id, status=event.status, lead_id=event.lead_id, **extra)


def reject(event: InboundEvent, error: AppError) -> Outcome:
    """Mark the event rejected with the error's reason; the caller answers the error."""
    reason = error.detail or error.title
    if error.errors:
        reason += " (" + "; ".join(f"{e.field}: {e.message}" for e in error.errors) + ")"
    event.status = EventStatus.rejected
    event.reason = reason[:2000]
    event.http_status = error.status
    event.processed_at = utcnow()
    return Outcome(event=event, status_code=error.status, result=_result(event), error=error)


async def record_too_large(
    session: AsyncSession, source: IntakeSource, meta: RequestMeta, *, size: int, limit: int
) -> Outcome:
    """An over-limit body: recorded without its body, answered 413."""
    event = start_event(source, meta, None, body_size=size)
    return settle(
        session, reject(event, PayloadTooLarge(f"The body is over this endpoint's limit of {limit} bytes."))
    )


def check_origin(source: IntakeSource, origin: str | None) -> bool:
    """Whether a browser origin may post to this form (no list = any origin; no Origin = not a browser)."""
    if not origin or not source.allowed_origins:
        return True
    return "*" in source.allowed_origins or origin.rstrip("/") in source.allowed_origins


def stamp(data: LeadInput, source: IntakeSource, event: InboundEvent) -> LeadInput:
    """Add what the source says about every lead it brings: source, tags, default owner/team."""
    data.source_id = source.id
    data.source_detail.update({"source_name": source.name, "inbound_event_id": str(event.id)})
    if source.provider:
        data.source_detail["provider"] = source.provider
    data.tags = [*source.tags, *data.tags]
    data.owner_id = source.default_owner_id
    data.team_id = source.default_team_id
    return data


def lead_input(payload: dict[str, Any], source: IntakeSource, event: InboundEvent) -> tuple[LeadInput, bool]:
    """Map a payload with the source's mapping, then stamp it; also says whether it is spam."""
    data, spam = map_payload(
        payload,
        mapping=source.field_mapping,
        source=LEAD_SOURCE[SourceKind(source.kind)],
        honeypot_field=source.honeypot_field,
    )
    return stamp(data, source, event), spam


async def process(
    session: AsyncSession, source: IntakeSource, event: InboundEvent, data: LeadInput, *, spam: bool = False
) -> Outcome:
    """Normalise and ingest one mapped payload; the event records what became of it."""
    event.processed_at = utcnow()
    if spam:
        event.status = EventStatus.spam
        event.reason = "honeypot field filled"
        event.http_status = 202
        return Outcome(event=event, status_code=202, result=_result(event))
    settings = await intake_cache.org_settings(session, source.org_id)
    errors = normalise(data, default_regions=[source.default_country, settings.default_phone_country])
    if errors:
        unmapped = sorted(k for k in data.attributes if not k.startswith("_"))
        detail = (
            "The payload has no usable email or phone."
            if any(e.code == "missing_contact" for e in errors)
            else "The payload has invalid contact details."
        )
        if unmapped:
            detail += f" Fields the mapping does not know: {', '.join(unmapped)}; fix the mapping and replay."
        return reject(event, ValidationFailed(detail, errors=errors))
    try:
        done = None
        if inspect(event).transient:  # not written yet: it can go in with a new lead
            done = await ingest_direct(
                session, data, org_id=source.org_id, settings=settings, inbound_event=event
            )
        if done is None:
            done = await ingest(
                session, data, org_id=source.org_id, settings=settings, actor=None, inbound_event_id=event.id
            )
    except Exception as exc:  # the event must survive whatever went wrong with the lead
        log.exception("intake processing failed", inbound_event_id=str(event.id))
        copy = clone(event)
        copy.lead_id = None  # that lead was rolled back with the transaction
        await session.rollback()
        return reject(copy, processing_error(exc))
    event.lead_id = done.lead.id
    event.status = EventStatus.created if done.created else EventStatus.merged
    event.http_status = STATUS_CODES[event.status]
    return Outcome(
        event=event,
        status_code=event.http_status,
        result=_result(
            event,
            activity_id=done.activity_id,
            possible_duplicate_of=done.possible_duplicate_of,
            notes=[note] if (note := phone_note(data.phone, data.phone_raw)) else [],
        ),
        written=done.event_written,
    )


def processing_error(exc: Exception) -> AppError:
    """What to answer when taking a lead in failed: a value PostgreSQL cannot store (SQLSTATE
    class 22, say a NUL byte) is the client's 422, anything else ours (500, kept for replay)."""
    if isinstance(exc, AppError):
        return exc
    if database_unavailable(exc):
        return DatabaseUnavailable()
    return unstorable(exc) or AppError(
        f"Processing failed ({type(exc).__name__}); the request is kept and can be replayed."
    )


async def receive_form(
    session: AsyncSession, source: IntakeSource, meta: RequestMeta, body: bytes, *, max_part_size: int
) -> Outcome:
    """A web form post (JSON, urlencoded or multipart)."""
    event = start_event(source, meta, body, body_size=len(body))
    if not check_origin(source, meta.headers.get("origin")):
        return settle(session, reject(event, Forbidden("This origin may not post to this form.")))
    try:
        payload = await parse_body(body, meta.content_type, max_part_size=max_part_size)
    except AppError as exc:
        return settle(session, reject(event, exc))
    data, spam = lead_input(payload, source, event)
    return settle(session, await process(session, source, event, data, spam=spam))


def verify_standard_webhook(
    source: IntakeSource, body: bytes, headers: Mapping[str, str], *, now: datetime | None = None
) -> tuple[SignatureVerdict, str]:
    """Check `webhook-signature` with the current secret, or the previous one within its grace period."""
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    if not all(headers.get(h) for h in wanted):
        return SignatureVerdict.missing, "webhook-id, webhook-timestamp and webhook-signature are required"
    now = now or utcnow()
    secrets = [source.secret]
    if (
        source.previous_secret
        and source.previous_secret_expires_at
        and source.previous_secret_expires_at > now
    ):
        secrets.append(source.previous_secret)
    sent = {h: headers[h] for h in wanted}
    reason = "no matching signature"
    for secret in secrets:
        if not secret:
            continue
        try:
            Webhook(secret).verify(body, sent, json_parse=False)
            return SignatureVerdict.valid, "valid"
        except Exception as exc:  # the library raises several types for malformed input
            message = str(exc)
            if "timestamp too" in message:
                return SignatureVerdict.stale, f"{message} (tolerance 5 minutes)"
            reason = message or reason
    return SignatureVerdict.invalid, reason


def webhook_view(payload: dict[str, Any], mapping: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An envelope `{"type", "timestamp", "data": {...}}` is read through `data` unless the
    mapping addresses `data.` paths itself; returns (fields, context)."""
    context: dict[str, Any] = {}
    inner = payload.get("data")
    if isinstance(inner, dict) and not any(k.startswith("data.") for k in mapping):
        context = {k: payload[k] for k in ("type", "timestamp") if k in payload}
        rest = {k: v for k, v in payload.items() if k not in ("data", "type", "timestamp")}
        return {**rest, **inner}, context
    return payload, context


async def ingest_webhook_payload(
    session: AsyncSession, source: IntakeSource, event: InboundEvent, body: bytes
) -> Outcome:
    """Parse and ingest the JSON of a (verified) webhook event."""
    if media_type(event.content_type) not in JSON_TYPES and not media_type(event.content_type).endswith(
        "+json"
    ):
        return reject(event, UnsupportedMediaType("Webhook bodies are JSON (application/json)."))
    try:
        payload = parse_json(body)
    except AppError as exc:
        return reject(event, exc)
    fields, context = webhook_view(payload, source.field_mapping)
    data, spam = lead_input(fields, source, event)
    if context.get("type"):
        data.source_detail["event_type"] = context["type"]
    if event.external_id:
        data.source_detail["webhook_id"] = event.external_id
    return await process(session, source, event, data, spam=spam)


async def receive_webhook(
    session: AsyncSession, source: IntakeSource, meta: RequestMeta, body: bytes
) -> Outcome:
    """A Standard Webhooks post: verify, refuse a repeated webhook-id (answering the first result), ingest."""
    event = start_event(source, meta, body, body_size=len(body))
    verdict, why = verify_standard_webhook(source, body, meta.headers)
    event.signature = verdict
    if verdict != SignatureVerdict.valid:
        return settle(session, reject(event, Unauthorized(f"Webhook signature rejected: {why}.", headers={})))
    webhook_id = meta.headers["webhook-id"][:300]
    event, claimed = await claim_external_id(session, event, webhook_id)
    if not claimed:
        return settle(session, await _repeat(session, source, event, webhook_id))
    return settle(session, await ingest_webhook_payload(session, source, event, body))


async def claim_external_id(
    session: AsyncSession, event: InboundEvent, external_id: str
) -> tuple[InboundEvent, bool]:
    """Write the event with the provider's event id (a unique key). When another event already
    holds it, the transaction (nothing but this insert) is rolled back and an unwritten copy of
    the event without the id is returned with False."""
    backup = clone(event)
    event.external_id = external_id
    session.add(event)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        return backup, False
    return event, True


async def _repeat(
    session: AsyncSession, source: IntakeSource, event: InboundEvent, external_id: str
) -> Outcome:
    first = (
        await session.execute(
            select(InboundEvent).where(
                col(InboundEvent.source_id) == source.id, col(InboundEvent.external_id) == external_id
            )
        )
    ).scalar_one()
    event.status = EventStatus.duplicate
    event.first_event_id = first.id
    event.lead_id = first.lead_id
    event.reason = f"repeat of {external_id}; answered with the first result"
    event.http_status = first.http_status or 200
    event.processed_at = utcnow()
    result = IntakeResult(inbound_event_id=first.id, status=first.status, lead_id=first.lead_id)
    error = None
    if first.status == EventStatus.rejected:
        error = FirstRejected(first.reason)
        error.status = first.http_status or 422
    return Outcome(event=event, status_code=event.http_status, result=result, error=error)
