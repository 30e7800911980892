"""Which jobs an outbox event becomes, and on which queue each job runs.

The relay enqueues each job by name with job id "<job>:<outbox id>", so a re-sent event is
enqueued once while arq still remembers it. Later domains add their event types here.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models.events import EVENT_TYPES
from app.services import followups, webhooks

# Internal events and their jobs; every public event type (app.models.events) also fans out
# to the webhook subscriptions that want it.
EVENT_JOBS: dict[str, tuple[str, ...]] = {
    "ping": ("ping",),
    "webhook.deliver": ("deliver_webhook",),
    "lead.created": ("assign_lead",),
    "lead.assigned": ("schedule_followup",),
    "lead.contacted": ("schedule_followup",),
    "task.completed": ("schedule_followup",),
    "deal.created": ("schedule_followup",),
    "deal.stage_changed": ("schedule_followup",),
    "dunning.email": ("send_dunning_email",),
}

# Jobs that only matter where an organisation has configured something: the relay skips them
# elsewhere (one query per batch), so an organisation without webhooks pays nothing for them.
# Each names the service function that answers which organisations want it.
Wanting = Callable[[AsyncSession], Awaitable[set[uuid.UUID]]]
OPTIONAL_JOBS: dict[str, Wanting] = {
    "fan_out_webhooks": webhooks.organisations_subscribed,
    "schedule_followup": followups.organisations_with_followups,
}
# The narrower question for an event about a lead: its follow-ups come only from lead-status
# policies (a stage's follow-up interval is about deals, and every default pipeline has one), so
# `lead.assigned` is not a job per assignment batch in every organisation.
LEAD_OPTIONAL_JOBS: dict[str, Wanting] = {
    "schedule_followup": followups.organisations_with_lead_followups,
}


def wanting(job: str, payload: Mapping[str, Any]) -> Wanting | None:
    """Which organisations an optional job matters to for an event with this payload (None: the
    job is not optional, it always runs)."""
    if payload.get("lead_id") and job in LEAD_OPTIONAL_JOBS:
        return LEAD_OPTIONAL_JOBS[job]
    return OPTIONAL_JOBS.get(job)


# Jobs the relay sends once per organisation and dispatched batch of events, not once per event:
# the batched job takes the batch's outbox ids (assignment decides them in one transaction).
BATCHED_JOBS: dict[str, str] = {"assign_lead": "assign_leads", "schedule_followup": "schedule_followups"}

# Batched jobs that take their events' lead ids as `lead_ids` too (they need nothing else of them).
LEAD_ID_JOBS = frozenset({"assign_leads"})

# Assignment has its own queue, so a backlog of reminders or webhooks never delays it.
ASSIGNMENT_JOBS = frozenset({"assign_lead", "assign_leads"})


def jobs_for(event_type: str) -> tuple[str, ...]:
    """The jobs an event of this type triggers (none: the event is only recorded)."""
    jobs = EVENT_JOBS.get(event_type, ())
    if event_type in EVENT_TYPES:
        jobs = (*jobs, "fan_out_webhooks")
    return jobs


def queue_for(job_name: str, settings: Settings) -> str:
    """The arq queue a job runs on."""
    return assignment_queue(settings) if job_name in ASSIGNMENT_JOBS else settings.queue_name


def assignment_queue(settings: Settings) -> str:
    """The queue of the assignment worker."""
    return f"{settings.queue_name}:assign"


def job_id(job_name: str, outbox_id: str) -> str:
    """The arq job id for one job of one outbox event."""
    return f"{job_name}:{outbox_id}"


def batch_job_id(job_name: str, outbox_ids: list[str]) -> str:
    """The arq job id for a batched job: a re-sent batch (same first event, same size) is one job."""
    return f"{job_name}:{outbox_ids[0]}:{len(outbox_ids)}"
