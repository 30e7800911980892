"""Assignment rules (ordered), their strategy cursors, and the decision log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import Index, String, UniqueConstraint, text
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
from app.models.common import Input, Patch
from app.models.durations import parse_duration

Strategy = Literal["round_robin", "weighted", "least_loaded"]
Operator = Literal["eq", "ne", "in", "not_in", "contains", "gte", "lte", "exists"]


class Condition(Input):
    """One test on a lead field: `score gte 50`, `country in [CN, HK]`, `attributes.plan eq pro`."""

    field: str = Field(min_length=1, max_length=100)
    op: Operator
    value: Any = None


class AssignmentRule(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """Leads matching every condition go to the target users by the strategy; first match wins."""

    __tablename__ = "assignment_rules"
    __table_args__ = (tenant_fk("assignment_rules", "target_team_id", "teams", ondelete="SET NULL"),)

    name: str = Field(max_length=200)
    position: int = Field(default=0, index=True)
    active: bool = Field(default=True)
    conditions: list[dict[str, Any]] = JsonField(default_factory=list)
    target_team_id: uuid.UUID | None = Field(default=None)
    target_user_ids: list[str] = JsonField(default_factory=list)
    strategy: str = Field(default="round_robin", sa_type=String(16))
    respect_working_hours: bool = Field(default=False)
    contact_sla: str | None = Field(default=None, max_length=40)
    sla_action: str = Field(default="reassign", sa_type=String(16))


class AssignmentCursor(TenantMixin, table=True):
    """Strategy state of one rule, locked (FOR UPDATE) for the length of one assignment."""

    __tablename__ = "assignment_cursors"
    __table_args__ = (tenant_fk("assignment_cursors", "rule_id", "assignment_rules", ondelete="CASCADE"),)

    rule_id: uuid.UUID = Field(primary_key=True)
    state: dict[str, Any] = JsonField()
    updated_at: datetime = TimestampField()


class AssignmentDecision(IdMixin, TenantMixin, table=True):
    """Why a lead went where it went: the rule, every candidate with why it was or wasn't chosen."""

    __tablename__ = "assignment_decisions"
    __table_args__ = (
        UniqueConstraint("org_id", "trigger_key"),
        tenant_fk("assignment_decisions", "lead_id", "leads", ondelete="CASCADE"),
        # The SLA sweep reads only decisions still waiting, so its cost does not grow with history.
        Index(
            "ix_assignment_decisions_sla_pending",
            "sla_due_at",
            postgresql_where=text("sla_handled_at IS NULL AND sla_due_at IS NOT NULL"),
        ),
    )

    lead_id: uuid.UUID = Field(index=True)
    trigger: str = Field(max_length=32)
    trigger_key: str = Field(max_length=200)
    outcome: str = Field(max_length=16)
    rule_id: uuid.UUID | None = Field(default=None)
    rule_name: str | None = Field(default=None, max_length=200)
    strategy: str | None = Field(default=None, max_length=16)
    chosen_user_id: uuid.UUID | None = Field(default=None, index=True)
    previous_owner_id: uuid.UUID | None = Field(default=None)
    explanation: str = Field(default="", max_length=2000)
    rules_considered: list[dict[str, Any]] = JsonField(default_factory=list)
    candidates: list[dict[str, Any]] = JsonField(default_factory=list)
    state_before: dict[str, Any] = JsonField()
    state_after: dict[str, Any] = JsonField()
    sla_due_at: datetime | None = TimestampField(nullable=True, default_now=False)
    sla_handled_at: datetime | None = TimestampField(nullable=True, default_now=False)
    created_at: datetime = TimestampField(index=True)


def _durations(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class AssignmentRuleCreate(Input):
    """POST /v1/assignment-rules; target is a team or a list of users (not both)."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ASSIGNMENT_RULE_CREATE))

    name: str = Field(min_length=1, max_length=200)
    position: int | None = None
    active: bool = True
    conditions: list[Condition] = Field(default_factory=list)
    target_team_id: uuid.UUID | None = None
    target_user_ids: list[uuid.UUID] = Field(default_factory=list)
    strategy: Strategy = "round_robin"
    respect_working_hours: bool = False
    contact_sla: str | None = Field(default=None, description="ISO 8601 duration, e.g. PT30M")
    sla_action: Literal["reassign", "escalate"] = "reassign"

    _sla = field_validator("contact_sla")(_durations)


class AssignmentRuleUpdate(Patch):
    """PATCH /v1/assignment-rules/{id}."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ASSIGNMENT_RULE_UPDATE))  # type: ignore[assignment]
    not_null = ("name", "position", "active", "strategy", "respect_working_hours", "sla_action")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    position: int | None = None
    active: bool | None = None
    conditions: list[Condition] | None = None
    target_team_id: uuid.UUID | None = None
    target_user_ids: list[uuid.UUID] | None = None
    strategy: Strategy | None = None
    respect_working_hours: bool | None = None
    contact_sla: str | None = None
    sla_action: Literal["reassign", "escalate"] | None = None

    _sla = field_validator("contact_sla")(_durations)


class AssignmentRuleRead(SQLModel):
    """A rule as the API shows it."""

    id: uuid.UUID
    name: str
    position: int
    active: bool
    conditions: list[Condition]
    target_team_id: uuid.UUID | None
    target_user_ids: list[uuid.UUID]
    strategy: str
    respect_working_hours: bool
    contact_sla: str | None
    sla_action: str
    created_at: datetime
    updated_at: datetime
    version: int


class CandidateRead(BaseModel):
    """One candidate of a decision."""

    user_id: uuid.UUID
    name: str
    open_leads: int | None  # counted when the decision depends on it (engine.counts_load)
    capacity: int | None
    eligible: bool
    reason: str


class AssignmentDecisionRead(SQLModel):
    """A decision with its explanation."""

    id: uuid.UUID
    lead_id: uuid.UUID
    trigger: str
    outcome: str
    rule_id: uuid.UUID | None
    rule_name: str | None
    strategy: str | None
    chosen_user_id: uuid.UUID | None
    previous_owner_id: uuid.UUID | None
    explanation: str
    rules_considered: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    state_before: dict[str, Any]
    state_after: dict[str, Any]
    sla_due_at: datetime | None
    created_at: datetime


class PreviewRequest(Input):
    """A hypothetical lead: the fields rules look at."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.ASSIGNMENT_PREVIEW))

    lead: dict[str, Any]


class PreviewResult(BaseModel):
    """Where that lead would go now, without assigning it or moving any cursor."""

    outcome: str
    rule_id: uuid.UUID | None
    rule_name: str | None
    chosen_user_id: uuid.UUID | None
    explanation: str
    rules_considered: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
