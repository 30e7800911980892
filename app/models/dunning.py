"""Dunning (催款): policies of steps relative to the due date, the log of every step per
installment, the messages sent to customers, and the risks raised (回款预警)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import Index, PrimaryKeyConstraint, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models import examples as ex
from app.models.base import (
    IdMixin,
    JsonField,
    TenantMixin,
    TimestampField,
    TimestampsMixin,
    VersionMixin,
    tenant_fk,
)
from app.models.common import Input

PLACEHOLDERS = ("customer", "order", "amount", "currency", "due_date", "days")


class DunningAction(enum.StrEnum):
    """What a step does."""

    email = "email"  # a reminder to the account's billing address, from a zh/en template
    owner_task = "owner_task"  # a task for the order's owner (call the customer)
    manager_task = "manager_task"  # an escalation task for the owner's team manager
    legal_notice = "legal_notice"  # flags the account for a legal notice


class DunningPolicy(TenantMixin, IdMixin, TimestampsMixin, VersionMixin, table=True):
    """A named, ordered set of steps; one per organisation is the default."""

    __tablename__ = "dunning_policies"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        Index(
            "uq_dunning_policies_org_id_default",
            "org_id",
            unique=True,
            postgresql_where=text("is_default"),
        ),
    )

    name: str = Field(max_length=200)
    is_default: bool = Field(default=False)
    active: bool = Field(default=True)


class DunningStep(TenantMixin, IdMixin, table=True):
    """One step: `offset_days` relative to the due date (negative = before) and one action."""

    __tablename__ = "dunning_steps"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        tenant_fk("dunning_steps", "policy_id", "dunning_policies", ondelete="CASCADE"),
        UniqueConstraint("org_id", "policy_id", "position"),
    )

    policy_id: uuid.UUID
    position: int
    offset_days: int
    action: DunningAction = Field(sa_type=String(16))
    language: str | None = Field(default=None, max_length=2)
    subject_template: str | None = Field(default=None, max_length=500)
    body_template: str | None = Field(default=None, sa_type=Text)
    # Dropped steps stay (their log rows point at them) but never fire again.
    retired: bool = Field(default=False)


class DunningOutcome(enum.StrEnum):
    """What happened to a step for one installment."""

    fired = "fired"
    skipped = "skipped"


class DunningLog(TenantMixin, IdMixin, table=True):
    """Each step once per installment: the unique key is what makes a rerun, or two workers at
    once, fire nothing twice."""

    __tablename__ = "dunning_log"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        UniqueConstraint("org_id", "installment_id", "step_id"),
        tenant_fk("dunning_log", "installment_id", "installments", ondelete="CASCADE"),
        tenant_fk("dunning_log", "step_id", "dunning_steps", ondelete="CASCADE"),
    )

    installment_id: uuid.UUID
    step_id: uuid.UUID
    policy_id: uuid.UUID
    offset_days: int
    action: str = Field(max_length=16)
    trigger_date: date
    run_for: date
    outcome: DunningOutcome = Field(sa_type=String(16))
    reason: str | None = Field(default=None, max_length=200)
    task_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    created_at: datetime = TimestampField()


class MessageState(enum.StrEnum):
    """Delivery state of an outbound message."""

    queued = "queued"  # waiting for the worker to send it through SMTP
    sending = "sending"  # a worker is handing it to the SMTP server
    sent = "sent"  # the SMTP server accepted it
    failed = "failed"  # SMTP refused it after every try
    handed_off = "handed_off"  # no SMTP configured: emitted as a `dunning.message` webhook


class OutboundMessage(TenantMixin, IdMixin, TimestampsMixin, table=True):
    """A message to a customer (a dunning reminder), with its delivery state."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        tenant_fk("outbound_messages", "installment_id", "installments", ondelete="CASCADE"),
        Index("ix_outbound_messages_org_id_created_at", "org_id", "created_at"),
    )

    installment_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    kind: str = Field(default="dunning", max_length=32)
    to_address: str | None = Field(default=None, max_length=320)
    subject: str = Field(max_length=500)
    body: str = Field(sa_type=Text)
    language: str = Field(max_length=2)
    transport: str = Field(max_length=16)
    state: MessageState = Field(sa_type=String(16))
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=2000)
    sent_at: datetime | None = TimestampField(nullable=True, default_now=False)


class ReceivableRisk(TenantMixin, IdMixin, table=True):
    """A risk raised once (a `risk.raised` event) per subject and reason."""

    __tablename__ = "receivable_risks"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "id"),
        UniqueConstraint("org_id", "subject_id", "reason"),
    )

    subject: str = Field(max_length=16)  # installment | account
    subject_id: uuid.UUID
    account_id: uuid.UUID | None = None
    reason: str = Field(max_length=32)
    details: dict[str, Any] = JsonField()
    raised_on: date
    created_at: datetime = TimestampField()


class DunningStepIn(Input):
    """A step of a policy."""

    model_config = ConfigDict(extra="forbid")

    offset_days: int = PydanticField(ge=-365, le=3650)
    action: DunningAction
    language: Literal["zh", "en"] | None = None
    subject_template: str | None = PydanticField(default=None, min_length=1, max_length=500)
    body_template: str | None = PydanticField(default=None, min_length=1, max_length=20000)

    @field_validator("subject_template", "body_template")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            from string import Formatter

            try:
                fields = [f for _, f, _, _ in Formatter().parse(value) if f is not None]
            except ValueError as exc:
                raise ValueError(f"not a valid template: {exc}") from exc
            unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
            if unknown:
                raise ValueError(
                    f"unknown placeholders {', '.join(unknown)}; use {{{'}, {'.join(PLACEHOLDERS)}}}"
                )
        return value


class DunningPolicyCreate(Input):
    """POST /v1/dunning-policies."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.DUNNING_POLICY_CREATE))

    name: str = PydanticField(min_length=1, max_length=200)
    is_default: bool = False
    active: bool = True
    steps: list[DunningStepIn] = PydanticField(min_length=1, max_length=30)


class DunningPolicyUpdate(Input):
    """PATCH /v1/dunning-policies/{id}: sent `steps` replace the steps (old ones are retired)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ex.examples(ex.DUNNING_POLICY_UPDATE))

    name: str | None = PydanticField(default=None, min_length=1, max_length=200)
    is_default: bool | None = None
    active: bool | None = None
    steps: list[DunningStepIn] | None = PydanticField(default=None, min_length=1, max_length=30)


class DunningStepRead(SQLModel):
    """A step as the API shows it."""

    id: uuid.UUID
    position: int
    offset_days: int
    action: DunningAction
    language: str | None
    subject_template: str | None
    body_template: str | None


class DunningPolicyRead(SQLModel):
    """A policy with its current steps."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    is_default: bool
    active: bool
    steps: list[DunningStepRead]
    created_at: datetime
    updated_at: datetime
    version: int


class DunningLogRead(SQLModel):
    """One step's outcome for an installment."""

    id: uuid.UUID
    installment_id: uuid.UUID
    step_id: uuid.UUID
    policy_id: uuid.UUID
    offset_days: int
    action: str
    trigger_date: date
    run_for: date
    outcome: DunningOutcome
    reason: str | None
    task_id: uuid.UUID | None
    message_id: uuid.UUID | None
    created_at: datetime


class DunningRunResult(BaseModel):
    """What one dunning run did."""

    as_of: date
    fired: int
    skipped: int


class OutboundMessageRead(SQLModel):
    """A message and its delivery state."""

    id: uuid.UUID
    installment_id: uuid.UUID | None
    account_id: uuid.UUID | None
    kind: str
    to_address: str | None
    subject: str
    body: str
    language: str
    transport: str
    state: MessageState
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RiskReason(BaseModel):
    """Why something is at risk."""

    code: str
    detail: str


class RiskRead(BaseModel):
    """An installment or an account at risk, with its reasons."""

    subject: Literal["installment", "account"]
    subject_id: uuid.UUID
    account_id: uuid.UUID | None
    account_name: str | None
    order_id: uuid.UUID | None
    currency: str
    open_amount: Decimal
    days_past_due: int | None
    reasons: list[RiskReason]


class RiskList(BaseModel):
    """GET /v1/receivables/risks."""

    as_of: date
    settings: dict[str, Any]
    data: list[RiskRead]
