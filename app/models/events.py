"""Typed event payloads: what outbound webhooks deliver, one schema per event type.

The envelope is the same for every event; `data` is the payload the domain wrote to the outbox.
Each class carries its event type, and domains emit instances: `outbox.emit(session,
LeadAssigned(lead_id=…, …))`. The public ones (EVENT_SCHEMAS) are published in the OpenAPI
document's `webhooks` section and delivered to subscriptions; the rest are internal.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.json_schema import SkipJsonSchema

D = TypeVar("D", bound=BaseModel)


# A datetime in a payload is written as `datetime.isoformat()` ("+00:00", not pydantic's "Z").
Instant = Annotated[datetime, PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json")]

# SkipJsonSchema marks fields the payloads carry but the published schemas do not list yet:
# publishing them is an API change of its own (the OpenAPI document stays as it was); clients
# already receive them as extra fields, which EventData allows.


class EventData(BaseModel):
    """Base of every payload: more fields may be added over time (clients must ignore unknown ones)."""

    model_config = ConfigDict(extra="allow")

    # The outbox event type, on each concrete class: `outbox.emit(session, LeadAssigned(...))`.
    event_type: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        """The payload as the outbox stores it: JSON values, the fields the emitter set."""
        return self.model_dump(mode="json", exclude_unset=True)


class LeadCreated(EventData):
    """A lead was accepted (from intake, the API or an import)."""

    event_type = "lead.created"
    lead_id: uuid.UUID
    org_id: SkipJsonSchema[uuid.UUID | None] = None
    source: str | None = None
    source_id: SkipJsonSchema[uuid.UUID | None] = None
    owner_id: SkipJsonSchema[uuid.UUID | None] = None
    team_id: SkipJsonSchema[uuid.UUID | None] = None
    pooled: SkipJsonSchema[bool | None] = None


class LeadAssigned(EventData):
    """A lead got an owner (rule, claim, manual assignment or SLA reassignment)."""

    event_type = "lead.assigned"
    lead_id: uuid.UUID
    owner_id: uuid.UUID | None = None
    team_id: SkipJsonSchema[uuid.UUID | None] = None
    by: SkipJsonSchema[str | None] = None
    rule_id: SkipJsonSchema[uuid.UUID | None] = None


class LeadRecycled(EventData):
    """A lead went back to the pool (线索回收)."""

    event_type = "lead.recycled"
    lead_id: uuid.UUID
    previous_owner_id: SkipJsonSchema[uuid.UUID | None] = None
    reason: SkipJsonSchema[str | None] = None


class LeadRecycleWarning(EventData):
    """An owned lead will return to the pool soon unless its owner follows up."""

    event_type = "lead.recycle_warning"
    lead_id: uuid.UUID
    owner_id: uuid.UUID | None = None
    recycle_at: Instant | None = None


class LeadConverted(EventData):
    """A lead became an account, a contact and (usually) a deal."""

    event_type = "lead.converted"
    lead_id: uuid.UUID
    account_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None


class TaskOverdue(EventData):
    """A follow-up task passed its due time without being done."""

    event_type = "task.overdue"
    task_id: uuid.UUID
    lead_id: SkipJsonSchema[uuid.UUID | None] = None
    deal_id: SkipJsonSchema[uuid.UUID | None] = None
    owner_id: uuid.UUID | None = None
    due_at: Instant | None = None


class DealEvent(EventData):
    """The fields of every deal event: the deal as it is after the change, and who changed it."""

    deal_id: uuid.UUID
    pipeline_id: SkipJsonSchema[uuid.UUID | None] = None
    stage_id: SkipJsonSchema[uuid.UUID | None] = None
    status: SkipJsonSchema[str | None] = None
    owner_id: SkipJsonSchema[uuid.UUID | None] = None
    amount: SkipJsonSchema[str | None] = None
    currency: SkipJsonSchema[str | None] = None
    by_user_id: SkipJsonSchema[uuid.UUID | None] = None


class DealStageChanged(DealEvent):
    """A deal moved from one stage to another."""

    event_type = "deal.stage_changed"
    from_stage_id: uuid.UUID | None = None
    to_stage_id: uuid.UUID | None = None
    reason: SkipJsonSchema[str | None] = None


class DealClosed(DealEvent):
    """A deal was won or lost."""


class DealWon(DealClosed):
    """A deal was won."""

    event_type = "deal.won"


class DealLost(DealClosed):
    """A deal was lost."""

    event_type = "deal.lost"
    lost_reason: SkipJsonSchema[str | None] = None


class QuoteAccepted(EventData):
    """A quote was accepted and became an order."""

    event_type = "quote.accepted"
    quote_id: uuid.UUID
    number: SkipJsonSchema[str | None] = None
    revision: SkipJsonSchema[int | None] = None
    deal_id: SkipJsonSchema[uuid.UUID | None] = None
    order_id: uuid.UUID | None = None
    total: SkipJsonSchema[str | None] = None
    currency: SkipJsonSchema[str | None] = None
    by_user_id: SkipJsonSchema[uuid.UUID | None] = None


class PaymentEvent(EventData):
    """The fields of every payment event: the payment as it is after the step."""

    payment_id: uuid.UUID
    account_id: uuid.UUID | None = None
    amount: str | None = None
    currency: str | None = None
    received_at: str | None = None
    status: str | None = None


class PaymentReceived(PaymentEvent):
    """A payment (回款) was recorded."""

    event_type = "payment.received"


class PaymentConfirmed(PaymentEvent):
    """A finance user confirmed a payment (or it was confirmed on entry): it counts from now on."""

    event_type = "payment.confirmed"
    by_user_id: uuid.UUID | None = None


class PaymentReversed(PaymentEvent):
    """A confirmed payment was reversed; its allocations stop counting from `reversed_on`."""

    event_type = "payment.reversed"
    reversed_on: str | None = None
    reason: str | None = None


class InstallmentEvent(EventData):
    """The fields of every installment event."""

    installment_id: uuid.UUID
    order_id: uuid.UUID | None = None
    due_date: str | None = None
    amount: str | None = None
    paid_amount: str | None = None
    currency: str | None = None


class InstallmentOverdue(InstallmentEvent):
    """An installment passed its due date unpaid."""

    event_type = "installment.overdue"


class InstallmentPaid(InstallmentEvent):
    """An installment is fully paid by confirmed payments."""

    event_type = "installment.paid"


class DunningMessage(EventData):
    """A dunning reminder to send with the customer's own mail tool (no SMTP configured)."""

    event_type = "dunning.message"
    message_id: uuid.UUID
    installment_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    to: str | None = None
    subject: str | None = None
    body: str | None = None
    language: str | None = None


class RiskRaised(EventData):
    """An installment or an account is at risk (回款预警), with the reason."""

    event_type = "risk.raised"
    subject: str
    subject_id: uuid.UUID
    reason: str
    detail: str | None = None
    account_id: uuid.UUID | None = None


# Internal events: jobs react to them (app.workers.registry); they are not delivered to webhooks.


class DealCreated(DealEvent):
    """A deal was created."""

    event_type = "deal.created"


class DealDeleted(DealEvent):
    """A deal was deleted."""

    event_type = "deal.deleted"


class LeadStatusSet(EventData):
    """A lead's status was set by hand (the event type names the new status)."""

    lead_id: uuid.UUID
    reason: str | None = None


class LeadBackToNew(LeadStatusSet):
    """A lead was set back to new."""

    event_type = "lead.new"


class LeadWorking(LeadStatusSet):
    """A lead is being worked."""

    event_type = "lead.working"


class LeadQualified(LeadStatusSet):
    """A lead was qualified."""

    event_type = "lead.qualified"


class LeadUnqualified(LeadStatusSet):
    """A lead was disqualified (with the reason)."""

    event_type = "lead.unqualified"


LEAD_STATUS_EVENTS: dict[str, type[LeadStatusSet]] = {
    e.event_type.removeprefix("lead."): e
    for e in (LeadBackToNew, LeadWorking, LeadQualified, LeadUnqualified)
}


class LeadContacted(EventData):
    """A lead was contacted for the first time (an outbound call, email or meeting)."""

    event_type = "lead.contacted"
    lead_id: uuid.UUID
    at: Instant


class LeadErased(EventData):
    """A lead's personal data was erased."""

    event_type = "lead.erased"
    lead_id: uuid.UUID


class TaskCompleted(EventData):
    """A follow-up task was done, its outcome logged."""

    event_type = "task.completed"
    task_id: uuid.UUID
    lead_id: uuid.UUID | None
    deal_id: uuid.UUID | None


class WebhookDeliver(EventData):
    """Try (again) to deliver one webhook delivery."""

    event_type = "webhook.deliver"
    delivery_id: uuid.UUID


class DunningEmail(EventData):
    """A dunning email is queued for the SMTP server (job send_dunning_email)."""

    event_type = "dunning.email"
    message_id: uuid.UUID


class Ping(EventData):
    """A diagnostics ping: its job records each run."""

    event_type = "ping"
    requested_by: str | None = None


EVENT_SCHEMAS: dict[str, type[EventData]] = {
    "lead.created": LeadCreated,
    "lead.assigned": LeadAssigned,
    "lead.recycled": LeadRecycled,
    "lead.recycle_warning": LeadRecycleWarning,
    "lead.converted": LeadConverted,
    "task.overdue": TaskOverdue,
    "deal.stage_changed": DealStageChanged,
    "deal.won": DealClosed,
    "deal.lost": DealClosed,
    "quote.accepted": QuoteAccepted,
    "payment.received": PaymentReceived,
    "payment.confirmed": PaymentConfirmed,
    "payment.reversed": PaymentReversed,
    "installment.paid": InstallmentPaid,
    "installment.overdue": InstallmentOverdue,
    "dunning.message": DunningMessage,
    "risk.raised": RiskRaised,
}
EVENT_TYPES = tuple(EVENT_SCHEMAS)


class Event(BaseModel, Generic[D]):
    """The body of every webhook: the same `id` on every retry (also the `webhook-id` header)."""

    id: uuid.UUID
    type: str
    created_at: datetime
    organisation_id: uuid.UUID
    data: D


def envelope(
    *, delivery_id: uuid.UUID, event_type: str, created_at: datetime, org_id: uuid.UUID, data: dict[str, Any]
) -> dict[str, Any]:
    """The JSON body delivered for an event."""
    return {
        "id": str(delivery_id),
        "type": event_type,
        "created_at": created_at.isoformat(),
        "organisation_id": str(org_id),
        "data": data,
    }
