"""Inbound email -> lead or timeline entry.

Order of routing: provider authentication (Mailgun HMAC with a used-token refusal, else Basic
credentials when the source has them), then dedupe on the RFC Message-ID (providers retry),
then threading (In-Reply-To / References against Message-IDs stored on activities and inbound
events of the organisation), then the sender's address (an open lead with it gets the touch),
else a new lead from the sender, subject, stripped body and the signature's phone and company.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import AppError, FieldError, Unauthorized, ValidationFailed
from app.models.base import utcnow
from app.models.intake import EventStatus, InboundEvent, IntakeResult, IntakeSource, SignatureVerdict
from app.models.lead import Activity, ActivityKind, Direction, Lead, LeadSource
from app.services import cache as intake_cache
from app.services.intake.email_inbound import (
    EmailParseError,
    EmailSignatureError,
    InboundEmail,
    check_basic_auth,
    parse_mailgun,
    parse_mime,
    parse_postmark,
    parse_sendgrid,
    verify_mailgun_signature,
)
from app.services.intake.payloads import media_type, parse_body, parse_json
from app.services.intake.service import (
    Outcome,
    RequestMeta,
    claim_external_id,
    process,
    reject,
    settle,
    stamp,
    start_event,
)
from app.services.leads.ingest import fill_empty, lock_lead
from app.services.leads.normalise import LeadInput, normalise

FORM_PROVIDERS = ("sendgrid", "mailgun")
MIME_TYPES = ("message/rfc822", "text/plain", "application/octet-stream")
DONE = (EventStatus.created, EventStatus.merged, EventStatus.activity)


def _flat(fields: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        if isinstance(value, list):
            value = value[0] if value and isinstance(value[0], str) else None
        if isinstance(value, str):
            out[key] = value
    return out


async def form_fields(body: bytes, content_type: str | None, *, max_part_size: int) -> dict[str, str]:
    """The string fields of a SendGrid / Mailgun post (urlencoded or multipart)."""
    if media_type(content_type) not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise ValidationFailed(
            "SendGrid and Mailgun post form data (multipart/form-data or urlencoded).",
            errors=[FieldError(field="content-type", code="unexpected", message=str(content_type))],
        )
    return _flat(await parse_body(body, content_type, max_part_size=max_part_size))


def parse_email(
    provider: str, body: bytes, content_type: str | None, fields: dict[str, str] | None, region: str | None
) -> InboundEmail:
    """The provider's parser on the stored body; EmailParseError / AppError when it is not an email."""
    if provider == "sendgrid":
        return parse_sendgrid(fields or {}, default_region=region)
    if provider == "mailgun":
        return parse_mailgun(fields or {}, default_region=region)
    if provider == "postmark":
        return parse_postmark(parse_json(body), default_region=region)
    if media_type(content_type) not in MIME_TYPES:
        raise ValidationFailed(
            "Raw email is posted as message/rfc822.",
            errors=[FieldError(field="content-type", code="unexpected", message=str(content_type))],
        )
    return parse_mime(body, default_region=region)


PARSE_BUDGET_SECONDS = 5.0
MAX_THREAD_IDS = 21  # In-Reply-To and the newest 20 References


async def parse_off_loop(
    provider: str, body: bytes, content_type: str | None, fields: dict[str, str] | None, region: str | None
) -> InboundEmail:
    """parse_email in a worker thread under a time budget, so no mail can stall the event loop; the
    passes are bounded and linear, so a thread that overruns the budget still ends soon after."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(parse_email, provider, body, content_type, fields, region),
            timeout=PARSE_BUDGET_SECONDS,
        )
    except TimeoutError:
        raise ValidationFailed(
            f"The email could not be parsed within {PARSE_BUDGET_SECONDS:g} s; it is kept as rejected."
        ) from None
    except RecursionError:
        raise ValidationFailed("The email is nested too deeply to parse.") from None


async def receive_email(
    session: AsyncSession,
    source: IntakeSource,
    meta: RequestMeta,
    body: bytes,
    *,
    max_part_size: int,
) -> Outcome:
    """Store, authenticate, then parse and route one inbound email."""
    outcome = await _receive(session, source, meta, body, max_part_size=max_part_size)
    return settle(session, outcome)


async def _receive(
    session: AsyncSession, source: IntakeSource, meta: RequestMeta, body: bytes, *, max_part_size: int
) -> Outcome:
    event = start_event(source, meta, body, body_size=len(body))
    provider = source.provider or "mime"
    fields: dict[str, str] | None = None
    if provider in FORM_PROVIDERS:
        try:
            fields = await form_fields(body, meta.content_type, max_part_size=max_part_size)
        except AppError as exc:
            return reject(event, exc)
    if provider == "mailgun":
        assert fields is not None
        try:
            verify_mailgun_signature(
                signing_key=source.signing_key or "",
                timestamp=fields.get("timestamp", ""),
                token=fields.get("token", ""),
                signature=fields.get("signature", ""),
            )
        except EmailSignatureError as exc:
            stale = "stale" in str(exc) or "future" in str(exc)
            event.signature = SignatureVerdict.stale if stale else SignatureVerdict.invalid
            return reject(event, Unauthorized(f"Mailgun signature rejected: {exc}.", headers={}))
        event.signature = SignatureVerdict.valid
        event, claimed = await claim_external_id(session, event, f"mailgun-token:{fields['token']}"[:300])
        if not claimed:
            event.signature = SignatureVerdict.replayed
            return reject(event, Unauthorized("This Mailgun token was already used.", headers={}))
    elif source.basic_auth_username:
        if not check_basic_auth(
            meta.headers.get("authorization"),
            username=source.basic_auth_username,
            password=source.basic_auth_password or "",
        ):
            sent = bool(meta.headers.get("authorization"))
            event.signature = SignatureVerdict.invalid if sent else SignatureVerdict.missing
            return reject(
                event,
                Unauthorized(
                    "This source needs its HTTP Basic credentials.",
                    headers={"WWW-Authenticate": 'Basic realm="loudou-intake"'},
                ),
            )
        event.signature = SignatureVerdict.valid
    return await ingest_email_body(session, source, event, body, fields=fields, max_part_size=max_part_size)


async def ingest_email_body(
    session: AsyncSession,
    source: IntakeSource,
    event: InboundEvent,
    body: bytes,
    *,
    fields: dict[str, str] | None = None,
    max_part_size: int,
) -> Outcome:
    """Parse and route an (authenticated) email; also what a replay runs."""
    settings = await intake_cache.org_settings(session, source.org_id)
    region = source.default_country or settings.default_phone_country
    provider = source.provider or "mime"
    try:
        if fields is None and provider in FORM_PROVIDERS:
            fields = await form_fields(body, event.content_type, max_part_size=max_part_size)
        mail = await parse_off_loop(provider, body, event.content_type, fields, region)
    except AppError as exc:
        return reject(event, exc)
    except EmailParseError as exc:
        return reject(event, ValidationFailed(f"This is not a {provider} inbound email: {exc}."))
    event.message_id = (mail.message_id or "")[:998] or None
    event.processed_at = utcnow()
    first = await _earlier_copy(session, event)
    if first is not None:
        event.status = EventStatus.duplicate
        event.first_event_id = first.id
        event.lead_id = first.lead_id
        event.reason = f"the same Message-ID was received as event {first.id}"
        event.http_status = 200
        return Outcome(
            event=event,
            status_code=200,
            result=IntakeResult(inbound_event_id=first.id, status=first.status, lead_id=first.lead_id),
        )
    if mail.is_automated:
        event.status = EventStatus.spam
        event.reason = "automated mail (auto-reply, bounce or list); no lead"
        event.http_status = 202
        return Outcome(
            event=event, status_code=202, result=IntakeResult(inbound_event_id=event.id, status=event.status)
        )
    data = stamp(lead_from_email(mail), source, event)
    thread_lead = await find_thread(session, mail.thread_ids())
    if thread_lead is not None:
        return await _thread_reply(session, event, thread_lead, mail, data, region)
    return await process(session, source, event, data)


async def _earlier_copy(session: AsyncSession, event: InboundEvent) -> InboundEvent | None:
    if not event.message_id:
        return None
    return (
        await session.execute(
            select(InboundEvent)
            .where(
                col(InboundEvent.source_id) == event.source_id,
                col(InboundEvent.message_id) == event.message_id,
                col(InboundEvent.status).in_([s.value for s in DONE]),
                col(InboundEvent.id) != event.id,
            )
            .order_by(col(InboundEvent.received_at))
            .limit(1)
        )
    ).scalar_one_or_none()


def lead_from_email(mail: InboundEmail) -> LeadInput:
    """The sender, subject, stripped body, and the phone and company found in the signature."""
    detail: dict[str, Any] = {"subject": mail.subject, "message_id": mail.message_id, "to": mail.to}
    attributes: dict[str, Any] = {}
    if mail.subject:
        attributes["email_subject"] = mail.subject
    if mail.company_source:
        detail["company_source"] = mail.company_source
    return LeadInput(
        source=LeadSource.email,
        name=mail.from_name,
        email=mail.from_email,
        phone=mail.phone,
        company=mail.company,
        message=mail.reply_text or mail.text,
        attributes=attributes,
        source_detail={k: v for k, v in detail.items() if v},
    )


async def find_thread(session: AsyncSession, ids: list[str]) -> Lead | None:
    """The lead whose stored Message-IDs (activities, inbound events) the mail refers to, newest id
    first; two queries whatever the number of ids (at most MAX_THREAD_IDS are looked at)."""
    ids = ids[:MAX_THREAD_IDS]
    if not ids:
        return None
    found: dict[str, uuid.UUID] = {}
    for message_id_col, lead_id_col in (
        (col(Activity.message_id), col(Activity.lead_id)),
        (col(InboundEvent.message_id), col(InboundEvent.lead_id)),
    ):
        rows = await session.execute(
            select(message_id_col, lead_id_col)
            .where(message_id_col.in_(ids), lead_id_col.is_not(None))
            .limit(10 * MAX_THREAD_IDS)
        )
        for message_id, lead_id in rows:
            if message_id is not None and lead_id is not None:
                found.setdefault(message_id, lead_id)  # an activity's lead wins over an event's
    for message_id in ids:
        lead = await _surviving(session, found.get(message_id))
        if lead is not None:
            return lead
    return None


async def _surviving(session: AsyncSession, lead_id: uuid.UUID | None) -> Lead | None:
    seen: set[uuid.UUID] = set()
    while lead_id is not None and lead_id not in seen:
        seen.add(lead_id)
        lead = await session.get(Lead, lead_id)
        if lead is None or lead.deleted_at is not None or lead.erased_at is not None:
            return None
        if lead.duplicate_of is None:
            return lead
        lead_id = lead.duplicate_of
    return None


async def _thread_reply(
    session: AsyncSession,
    event: InboundEvent,
    lead: Lead,
    mail: InboundEmail,
    data: LeadInput,
    region: str | None,
) -> Outcome:
    normalise(data, default_regions=[region])
    async with session.begin_nested():
        lead = await lock_lead(session, lead.id) or lead
        filled, _ = fill_empty(lead, data)
        now = utcnow()
        lead.touch_count += 1
        lead.last_touch_at = now
        lead.updated_at = now
        lead.version += 1
        activity = Activity(
            org_id=lead.org_id,
            lead_id=lead.id,
            kind=ActivityKind.email,
            direction=Direction.inbound,
            subject=(mail.subject or "")[:500] or None,
            body=mail.reply_text or mail.text,
            occurred_at=now,
            inbound_event_id=event.id,
            message_id=mail.message_id,
            details={
                "from": mail.from_email,
                "sent_at": mail.date.isoformat() if mail.date else None,
                "in_reply_to": mail.in_reply_to,
                "quoted_text": mail.quoted_text,
                "signature": mail.signature,
                "filled": filled,
            },
        )
        session.add(activity)
        await session.flush()
    event.lead_id = lead.id
    event.status = EventStatus.activity
    event.http_status = 200
    return Outcome(
        event=event,
        status_code=200,
        result=IntakeResult(
            inbound_event_id=event.id, status=event.status, lead_id=lead.id, activity_id=activity.id
        ),
    )
