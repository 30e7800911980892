"""Lead scoring rules: a condition on a lead field gives points."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict
from sqlalchemy import String
from sqlmodel import Field, SQLModel

from app.models import examples as ex
from app.models.base import IdMixin, JsonField, TenantMixin, TimestampsMixin, VersionMixin
from app.models.common import Input, Patch


class ScoringOperator(enum.StrEnum):
    """How a rule compares the field with its value."""

    eq = "eq"
    neq = "neq"
    in_ = "in"
    contains = "contains"
    present = "present"
    absent = "absent"
    gte = "gte"
    lte = "lte"
    free_mail = "free_mail"
    company_email = "company_email"


class ScoringRule(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """`field` `operator` `value` -> `points` (negative points are allowed)."""

    __tablename__ = "scoring_rules"

    name: str = Field(max_length=200)
    field: str = Field(max_length=200)
    operator: ScoringOperator = Field(sa_type=String(16))
    value: Any = JsonField(default_factory=lambda: None, nullable=True)
    points: int
    active: bool = Field(default=True)


class ScoringRuleCreate(Input):
    """POST /v1/scoring-rules. `field` is a lead field (email, title, source, country, industry,
    company, phone, name, message) or `attributes.<key>`."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.SCORING_RULE_CREATE))

    name: str = Field(min_length=1, max_length=200)
    field: str = Field(min_length=1, max_length=200)
    operator: ScoringOperator
    value: Any = None
    points: int = Field(ge=-1000, le=1000)
    active: bool = True


class ScoringRuleUpdate(Patch):
    """PATCH /v1/scoring-rules/{id}."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.SCORING_RULE_UPDATE))  # type: ignore[assignment]
    not_null = ("name", "field", "operator", "points", "active")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    field: str | None = Field(default=None, min_length=1, max_length=200)
    operator: ScoringOperator | None = None
    value: Any = None
    points: int | None = Field(default=None, ge=-1000, le=1000)
    active: bool | None = None


class ScoringRuleRead(SQLModel):
    """A scoring rule."""

    id: uuid.UUID
    name: str
    field: str
    operator: ScoringOperator
    value: Any
    points: int
    active: bool
    created_at: datetime
    updated_at: datetime
    version: int
