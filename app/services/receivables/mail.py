"""Dunning emails: the default zh/en templates, rendering, and delivery through SMTP (aiosmtplib).

Placeholders: {customer} {order} {amount} {currency} {due_date} {days} (days past due; negative
before the due date). Messages are written as `outbound_messages` rows in the dunning run's
transaction; with LOUDOU_SMTP_URL set the worker sends them (job `send_dunning_email`), else
they are emitted as `dunning.message` webhook events for the customer's own mail tool.
"""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import utcnow
from app.models.dunning import MessageState, OutboundMessage
from app.pagination import PageParams, paginate
from app.security import Principal
from app.services.receivables.access import account_clause

DEFAULT_TEMPLATES: dict[str, tuple[str, str]] = {
    "zh": (
        "付款提醒：订单 {order} 的 {amount} {currency} 将于 {due_date} 到期",
        "{customer} 您好：\n\n订单 {order} 的应付款 {amount} {currency}（到期日 {due_date}）尚未结清。"
        "如已付款请忽略本邮件，否则请尽快安排付款。\n\n谢谢！",
    ),
    "en": (
        "Payment reminder: {amount} {currency} for order {order} due {due_date}",
        "Dear {customer},\n\nOur records show {amount} {currency} for order {order}, due on {due_date}, "
        "is still open. If you have already paid, please ignore this message; otherwise please arrange "
        "payment at your earliest convenience.\n\nThank you.",
    ),
}


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, values: dict[str, str]) -> str:
    """A template with its placeholders filled (unknown ones are left as written)."""
    return template.format_map(_Values(values))


def templates_for(language: str, subject: str | None, body: str | None) -> tuple[str, str]:
    """The step's own templates, else the language's defaults."""
    default_subject, default_body = DEFAULT_TEMPLATES.get(language, DEFAULT_TEMPLATES["en"])
    return subject or default_subject, body or default_body


def email_of(message: OutboundMessage, sender: str) -> EmailMessage:
    """The MIME message for an outbound message."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to_address or ""
    email["Subject"] = message.subject
    email["Message-ID"] = make_msgid(idstring=str(message.id))
    email["X-Loudou-Message-Id"] = str(message.id)
    email.set_content(message.body)
    return email


def smtp_options(url: str) -> dict[str, Any]:
    """aiosmtplib options from smtp://user:password@host:port (smtps:// for implicit TLS,
    ?starttls=true to upgrade a plain connection)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("LOUDOU_SMTP_URL must start with smtp:// or smtps://")
    query = parse_qs(parts.query)
    implicit = parts.scheme == "smtps"
    return {
        "hostname": parts.hostname or "localhost",
        "port": parts.port or (465 if implicit else 25),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "use_tls": implicit,
        "start_tls": query.get("starttls", ["false"])[0].lower() == "true",
        "timeout": 20,
    }


async def send(message: OutboundMessage, *, url: str, sender: str) -> None:
    """Hand one message to the SMTP server (raises on refusal or connection failure)."""
    await aiosmtplib.send(email_of(message, sender), **smtp_options(url))


def claim(message: OutboundMessage) -> bool:
    """Take a queued message for one try (committed before the SMTP conversation). A message
    found `sending` was being sent by a worker that stopped mid-try: whether the server got it is
    unknown, and it is marked failed rather than risk a second copy to the customer."""
    if message.state == MessageState.sending:
        message.state = MessageState.failed
        message.last_error = "the worker stopped while sending; not retried to avoid a duplicate"
        message.updated_at = utcnow()
        return False
    if message.state != MessageState.queued:
        return False
    message.state = MessageState.sending
    message.attempts += 1
    message.updated_at = utcnow()
    return True


def mark_sent(message: OutboundMessage) -> None:
    """The SMTP server accepted the message."""
    message.state = MessageState.sent
    message.sent_at = utcnow()
    message.last_error = None
    message.updated_at = utcnow()


def mark_failed(message: OutboundMessage, error: str, *, final: bool) -> None:
    """A try failed (the server refused it or could not be reached): queued again for the next
    try, or `failed` after the last one."""
    message.last_error = error[:2000]
    message.state = MessageState.failed if final else MessageState.queued
    message.updated_at = utcnow()


async def get_message(session: AsyncSession, message_id: uuid.UUID) -> OutboundMessage | None:
    """A message of the session's organisation, locked."""
    return (
        await session.execute(
            select(OutboundMessage).where(col(OutboundMessage.id) == message_id).with_for_update()
        )
    ).scalar_one_or_none()


async def list_messages(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    state: MessageState | None = None,
    installment_id: uuid.UUID | None = None,
) -> tuple[list[OutboundMessage], str | None]:
    """Messages to customers whose receivables the caller may see, newest first."""
    stmt = select(OutboundMessage).where(account_clause(principal, col(OutboundMessage.account_id)))
    if state is not None:
        stmt = stmt.where(col(OutboundMessage.state) == state)
    if installment_id is not None:
        stmt = stmt.where(col(OutboundMessage.installment_id) == installment_id)
    return await paginate(
        session, stmt, page, id_column=OutboundMessage.id, sortable={"created_at": OutboundMessage.created_at}
    )


async def claim_message(session: AsyncSession, message_id: uuid.UUID, *, smtp_configured: bool) -> bool:
    """Claim a queued message for one SMTP try (see `claim`); without SMTP it fails at once."""
    message = await get_message(session, message_id)
    if message is None or not claim(message):
        return False
    if not smtp_configured:
        mark_failed(message, "LOUDOU_SMTP_URL is not set", final=True)
        return False
    return True


async def record_try(
    session: AsyncSession, message_id: uuid.UUID, error: Exception | None, *, max_tries: int
) -> bool | None:
    """Record how a try went: True when it was the last (sent, or failed for good), False when
    another try should follow, None when the message is gone."""
    message = await get_message(session, message_id)
    if message is None:
        return None
    if error is None:
        mark_sent(message)
        return True
    final = message.attempts >= max_tries
    mark_failed(message, f"{type(error).__name__}: {error}", final=final)
    return final
