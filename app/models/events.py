"""Typed event payloads: what outbound webhooks deliver, one schema per event type.

The envelope is the same for every event; `data` is the payload the domain wrote to the outbox.
These schemas are published in the OpenAPI document's `webhooks` section.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

D = TypeVar("D", bound=BaseModel)


class EventData(BaseModel):
    """Base of every payload: more fields may be added over time (clients must ignore unknown ones)."""

    model_config = ConfigDict(extra="allow")


class LeadCreated(EventData):
    """A lead was accepted (from intake, the API or an import)."""

    lead_id: uuid.UUID
    source: str | None = None


class LeadAssigned(EventData):
    """A lead got an owner (rule, claim, manual assignment or SLA reassignment)."""

    lead_id: uuid.UUID
    owner_id: uuid.UUID | None = None


class LeadRecycled(EventData):
    """A lead went back to the pool (线索回收)."""

    lead_id: uuid.UUID


class LeadRecycleWarning(EventData):
    """An owned lead will return to the pool soon unless its owner follows up."""

    lead_id: uuid.UUID
    owner_id: uuid.UUID | None = None
    recycle_at: datetime | None = None


class LeadConverted(EventData):
    """A lead became an account, a contact and (usually) a deal."""

    lead_id: uuid.UUID
    account_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None


class TaskOverdue(EventData):
    """A follow-up task passed its due time without being done."""

    task_id: uuid.UUID
    owner_id: uuid.UUID | None = None
    due_at: datetime | None = None


class DealStageChanged(EventData):
    """A deal moved from one stage to another."""

    deal_id: uuid.UUID
    from_stage_id: uuid.UUID | None = None
    to_stage_id: uuid.UUID | None = None


class DealClosed(EventData):
    """A deal was won or lost."""

    deal_id: uuid.UUID


class QuoteAccepted(EventData):
    """A quote was accepted and became an order."""

    quote_id: uuid.UUID
    order_id: uuid.UUID | None = None


class PaymentReceived(EventData):
    """A payment (回款) was recorded."""

    payment_id: uuid.UUID


class PaymentConfirmed(EventData):
    """A finance user confirmed a payment (or it was confirmed on entry): it counts from now on."""

    payment_id: uuid.UUID
    account_id: uuid.UUID | None = None


class PaymentReversed(EventData):
    """A confirmed payment was reversed; its allocations stop counting from `reversed_on`."""

    payment_id: uuid.UUID
    account_id: uuid.UUID | None = None
    reversed_on: str | None = None


class InstallmentOverdue(EventData):
    """An installment passed its due date unpaid."""

    installment_id: uuid.UUID


class InstallmentPaid(EventData):
    """An installment is fully paid by confirmed payments."""

    installment_id: uuid.UUID
    order_id: uuid.UUID | None = None


class DunningMessage(EventData):
    """A dunning reminder to send with the customer's own mail tool (no SMTP configured)."""

    message_id: uuid.UUID
    installment_id: uuid.UUID | None = None
    to: str | None = None
    subject: str | None = None
    body: str | None = None
    language: str | None = None


class RiskRaised(EventData):
    """An installment or an account is at risk (回款预警), with the reason."""

    subject: str
    subject_id: uuid.UUID
    reason: str
    account_id: uuid.UUID | None = None


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
