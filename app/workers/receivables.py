"""Collections jobs: send a dunning email through SMTP; the collections sweep (overdue statuses,
dunning, ratings and risks) in each organisation's timezone."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from arq import Retry

from app.services.receivables import mail, sweep
from app.state import AppState
from app.workers.jobs import job_session, load_event

log = structlog.get_logger("loudou.receivables")

SMTP_TRIES = 5


async def send_dunning_email(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> str:
    """Send one queued message through LOUDOU_SMTP_URL, at most once: the try is claimed and
    committed first (`sending`), so a worker that dies mid-try never leads to a second copy.
    Refusals and connection failures are retried with backoff, `failed` after the last try."""
    state: AppState = ctx["state"]
    event = await load_event(ctx, outbox_id, org_id)
    if event is None:
        return "gone"
    url = state.settings.smtp_url
    message_id = uuid.UUID(str(event.payload["message_id"]))
    async with job_session(ctx, event.org_id) as session:
        claimed = await mail.claim_message(session, message_id, smtp_configured=bool(url))
        message = await mail.get_message(session, message_id) if claimed else None
    if message is None:
        return "nothing to do"
    error: Exception | None = None
    try:
        await mail.send(message, url=url or "", sender=state.settings.smtp_from)
    except Exception as exc:  # any SMTP or network failure: count the try, back off
        error = exc
    async with job_session(ctx, event.org_id) as session:
        final = await mail.record_try(session, message_id, error, max_tries=SMTP_TRIES)
    if error is None:
        return "sent"
    log.warning("dunning email failed", message_id=str(message_id), error=str(error), final=final)
    if final is not False:
        return "failed"
    raise Retry(defer=2 ** min(message.attempts, 8)) from error


async def collections_sweep(ctx: dict[str, Any]) -> int:
    """For every organisation with open receivables, one transaction of its own: overdue
    statuses, dunning, ratings and risks as of its local today. Runs a few times an hour, so
    each organisation's day starts within minutes of its local midnight; safe on several workers."""
    state: AppState = ctx["state"]
    async with job_session(ctx, None) as session:
        org_ids = await sweep.organisations_with_receivables(session)
    for org_id in org_ids:
        async with job_session(ctx, org_id) as session:
            await sweep.daily(session, org_id, smtp=bool(state.settings.smtp_url))
    return len(org_ids)
