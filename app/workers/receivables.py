"""Collections jobs: send a dunning email through SMTP; the daily collections sweep (overdue
statuses, dunning, risks) in each organisation's timezone."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from arq import Retry
from sqlalchemy import select, text

from app.db import tenant_session
from app.models.organisation import Organisation
from app.services.receivables import dunning, ledger, mail, risks
from app.state import AppState
from app.workers.jobs import load_event

log = structlog.get_logger("loudou.receivables")

SMTP_TRIES = 5


async def send_dunning_email(ctx: dict[str, Any], outbox_id: str) -> str:
    """Send one queued message through LOUDOU_SMTP_URL, at most once: the try is claimed and
    committed first (`sending`), so a worker that dies mid-try never leads to a second copy.
    Refusals and connection failures are retried with backoff, `failed` after the last try."""
    state: AppState = ctx["state"]
    event = await load_event(state, outbox_id)
    if event is None:
        return "gone"
    url = state.settings.smtp_url
    message_id = uuid.UUID(str(event.payload["message_id"]))
    async with tenant_session(state.sessions, event.org_id) as session:
        message = await mail.get_message(session, message_id)
        if message is None:
            return "gone"
        claimed = mail.claim(message)
        if claimed and not url:
            mail.mark_failed(message, "LOUDOU_SMTP_URL is not set", final=True)
            claimed = False
        await session.commit()
    if not claimed:
        return "nothing to do"
    error: Exception | None = None
    try:
        await mail.send(message, url=url or "", sender=state.settings.smtp_from)
    except Exception as exc:  # any SMTP or network failure: count the try, back off
        error = exc
    async with tenant_session(state.sessions, event.org_id) as session:
        message = await mail.get_message(session, message_id)
        if message is None:
            return "gone"
        if error is None:
            mail.mark_sent(message)
            await session.commit()
            return "sent"
        final = message.attempts >= SMTP_TRIES
        mail.mark_failed(message, f"{type(error).__name__}: {error}", final=final)
        await session.commit()
    log.warning("dunning email failed", message_id=str(message_id), error=str(error), final=final)
    if final:
        return "failed"
    raise Retry(defer=2**message.attempts) from error


async def collections_sweep(ctx: dict[str, Any]) -> int:
    """For every organisation with open receivables: overdue statuses, dunning and risks as of
    its local today. Idempotent (status guards, the dunning log's unique key, the risks' key),
    so several workers may run it at once; it runs a few times an hour so each organisation's
    day starts within minutes of its local midnight."""
    state: AppState = ctx["state"]
    smtp = bool(state.settings.smtp_url)
    async with state.sessions() as session:
        org_ids = list(
            (
                await session.execute(
                    text(
                        "SELECT DISTINCT org_id FROM installments "
                        "WHERE status NOT IN ('paid', 'written_off') ORDER BY org_id"
                    )
                )
            ).scalars()
        )
    done = 0
    for org_id in org_ids:
        async with tenant_session(state.sessions, org_id) as session:
            org = (await session.execute(select(Organisation).where(Organisation.id == org_id))).scalar_one()
            today = ledger.local_today(org.typed_settings())
            await ledger.mark_overdue(session, org_id, today)
            await dunning.run(session, org_id, as_of=today, smtp=smtp)
            await risks.raise_risks(session, org_id, today=today)
            await session.commit()
            done += 1
    return done
