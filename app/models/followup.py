"""Follow-up policies (跟进计划): per lead status, how soon the owner must follow up next."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import field_validator
from sqlalchemy import String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import IdMixin, TenantMixin, TimestampsMixin, VersionMixin, tenant_fk
from app.models.common import Input, Patch
from app.models.durations import parse_duration
from app.models.lead import LeadStatus


class FollowupPolicy(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """While a lead is in `lead_status` (or a deal in `deal_stage_id`), its owner gets a task due
    `interval` after each touch."""

    __tablename__ = "followup_policies"
    __table_args__ = (
        UniqueConstraint("org_id", "lead_status"),
        UniqueConstraint("org_id", "deal_stage_id"),
        tenant_fk("followup_policies", "deal_stage_id", "stages", ondelete="CASCADE"),
    )

    name: str = Field(max_length=200)
    lead_status: str | None = Field(default=None, sa_type=String(16))
    deal_stage_id: uuid.UUID | None = Field(default=None)
    interval: str = Field(max_length=40)
    task_subject: str = Field(max_length=500)
    active: bool = Field(default=True)


def _interval(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class FollowupPolicyCreate(Input):
    """POST /v1/followup-policies."""

    name: str = Field(min_length=1, max_length=200)
    lead_status: LeadStatus | None = None
    deal_stage_id: uuid.UUID | None = None
    interval: str = Field(description="ISO 8601 duration, e.g. PT1H or P3D")
    task_subject: str = Field(default="Follow up", min_length=1, max_length=500)
    active: bool = True

    _interval = field_validator("interval")(_interval)


class FollowupPolicyUpdate(Patch):
    """PATCH /v1/followup-policies/{id}."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    interval: str | None = None
    task_subject: str | None = Field(default=None, min_length=1, max_length=500)
    active: bool | None = None

    _interval = field_validator("interval")(_interval)


class FollowupPolicyRead(SQLModel):
    """A policy as the API shows it."""

    id: uuid.UUID
    name: str
    lead_status: str | None
    deal_stage_id: uuid.UUID | None
    interval: str
    task_subject: str
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int


class TaskRead(SQLModel):
    """A task (an activity of kind task) with its due time."""

    id: uuid.UUID
    lead_id: uuid.UUID | None
    deal_id: uuid.UUID | None
    owner_id: uuid.UUID | None
    subject: str | None
    body: str | None
    due_at: datetime | None
    done_at: datetime | None
    overdue: bool
    details: dict[str, Any]
    created_at: datetime


class TaskComplete(Input):
    """POST /v1/tasks/{id}/complete: the outcome is logged as an activity of `log_as`."""

    outcome: str = Field(min_length=1, max_length=5000)
    log_as: Literal["call", "email", "meeting", "note"] = "call"
