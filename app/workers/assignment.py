"""Assignment jobs: assign a new lead (its own queue), the contact-SLA sweep, 线索回收."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from time import monotonic
from typing import Any

import structlog
from arq import Retry
from sqlalchemy.exc import DBAPIError

from app.errors import NotFound
from app.models.base import utcnow
from app.services.assignment import engine, recycling, sla
from app.workers.jobs import job_session, load_event, load_events

log = structlog.get_logger("loudou.assignment")

# The job's own timeout (5 s) is final in arq: stop earlier and ask for a retry instead.
INNER_DEADLINE_SECONDS = 3.0
MAX_TRIES = 5
BUSY_RETRY_SECONDS = 0.2
# Leads older than this without any decision are assigned by the sweep (their job was lost or
# gave up); younger ones are left to their job.
SWEEP_AFTER = timedelta(minutes=10)  # well past arq's retries and the relay's re-sends
SWEEP_BATCH = 50
SWEEP_WINDOW = timedelta(hours=6)
# The sweep's cron timeout is 30 s and arq cancels a job at it: stop taking leads well before
# (a cancelled lead's transaction is rolled back, and the leads left wait for the next pass).
SWEEP_BUDGET_SECONDS = 20.0


async def assign_lead(ctx: dict[str, Any], outbox_id: str, org_id: str | None = None) -> str:
    """Run the rules for a `lead.created` event; a re-run (or the sweep) changes nothing more.

    Bounded by an inner deadline: a slow database turns into arq Retry with backoff rather than
    the job's final timeout; after MAX_TRIES the sweep takes the lead."""
    lead_id: uuid.UUID | None = None
    try:
        # The event's look-up too: a job past arq's own timeout fails for good (no retry).
        async with asyncio.timeout(INNER_DEADLINE_SECONDS):
            event = await load_event(ctx, outbox_id, org_id)
            if event is None:
                return "gone"
            lead_id = uuid.UUID(str(event.payload["lead_id"]))
            return await _assign_once(ctx, event.org_id, lead_id)
    except engine.LeadBusy:
        # Another worker's batch holds the lead: its decision is a moment away. Look again then
        # (a batch that ran out of time leaves it to this job).
        tries = int(ctx.get("job_try", 1))
        if tries >= MAX_TRIES:
            return "left for the sweep"
        raise Retry(defer=BUSY_RETRY_SECONDS) from None
    except (TimeoutError, DBAPIError) as exc:
        tries = int(ctx.get("job_try", 1))
        log.warning(
            "assignment.retry",
            lead_id=str(lead_id),
            outbox_id=outbox_id,
            tries=tries,
            error=type(exc).__name__,
        )
        if tries >= MAX_TRIES:
            return "left for the sweep"
        raise Retry(defer=min(0.5 * 2**tries, 30)) from exc


async def assign_leads(
    ctx: dict[str, Any], outbox_ids: list[str], org_id: str, lead_ids: list[str] | None = None
) -> str:
    """Run the rules for a batch of one organisation's `lead.created` events in one transaction
    (the relay sends each batch of events it dispatches as one job, with the events' lead ids;
    a job enqueued without them reads its events back); a re-run decides only the leads still
    undecided.

    Leads another transaction holds (another batch, an edit) or that the time budget left are
    looked at again shortly by a retry; after MAX_TRIES the sweep takes them."""
    tries = int(ctx.get("job_try", 1))
    try:
        async with asyncio.timeout(INNER_DEADLINE_SECONDS):
            if lead_ids is None:
                events = await load_events(ctx, outbox_ids, org_id)
                lead_ids = [str(e.payload["lead_id"]) for e in events if e.payload.get("lead_id")]
            async with job_session(ctx, uuid.UUID(org_id)) as session:
                outcome = await engine.assign_created_leads(session, [uuid.UUID(i) for i in lead_ids])
    except (TimeoutError, DBAPIError) as exc:
        log.warning("assignment.retry", outbox_ids=len(outbox_ids), tries=tries, error=type(exc).__name__)
        if tries >= MAX_TRIES:
            return "left for the sweep"
        raise Retry(defer=min(0.5 * 2**tries, 30)) from exc
    if outcome.undecided:
        if tries >= MAX_TRIES:
            return f"{outcome.decided} decided, {outcome.undecided} left for the sweep"
        raise Retry(defer=BUSY_RETRY_SECONDS)
    return f"{outcome.decided} decided"


async def _assign_once(ctx: dict[str, Any], org_id: uuid.UUID, lead_id: uuid.UUID) -> str:
    try:
        async with job_session(ctx, org_id) as session:
            decision = await engine.assign_created_batch(
                session, lead_id=lead_id, trigger_key=f"lead.created:{lead_id}"
            )
    except NotFound:
        return "lead gone"
    return decision.outcome


async def unassigned_sweep(ctx: dict[str, Any]) -> int:
    """Assign the leads whose `lead.created` job never decided (lost, or out of tries)."""
    now = utcnow()
    async with job_session(ctx, None) as session:
        stuck = await engine.undecided_leads(
            session, since=now - SWEEP_WINDOW, until=now - SWEEP_AFTER, limit=SWEEP_BATCH
        )
    done = 0
    deadline = monotonic() + SWEEP_BUDGET_SECONDS
    for org_id, lead_id in stuck:
        if monotonic() > deadline:
            break
        try:
            async with asyncio.timeout(INNER_DEADLINE_SECONDS):
                await _assign_once(ctx, org_id, lead_id)
            done += 1
        except engine.LeadBusy:
            continue  # a batch is assigning it
        except (TimeoutError, DBAPIError):
            log.warning("assignment.sweep_failed", lead_id=str(lead_id))
    if done:
        log.info("assignment.swept", leads=done)
    return done


async def sla_sweep(ctx: dict[str, Any]) -> int:
    """Leads not contacted within their rule's SLA go to the next rep (or the team manager)."""
    async with job_session(ctx, None) as session:
        due = await sla.due_decisions(session)
    handled = 0
    for decision_id, org_id in due:
        async with job_session(ctx, org_id) as session:
            if await sla.handle_missed(session, decision_id=decision_id):
                handled += 1
    return handled


async def recycle_sweep(ctx: dict[str, Any]) -> int:
    """线索回收 for every organisation that turned it on; safe on several workers (once-only keys)."""
    async with job_session(ctx, None) as session:
        orgs = await recycling.organisations_recycling(session)
    total = 0
    for org_id, after, warn in orgs:
        async with job_session(ctx, org_id) as session:
            warned, recycled = await recycling.sweep_organisation(
                session, recycle_after=after, warn_before=warn
            )
        total += warned + recycled
    return total
