"""Pipelines and their ordered stages."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import StringConstraints, field_validator
from sqlalchemy import Numeric, String, UniqueConstraint
from sqlmodel import Field, SQLModel

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

# The deal fields a stage may require before a deal leaves it.
REQUIRABLE_FIELDS = ("amount", "currency", "expected_close_date", "contact_id", "account_id")


# A stable machine name for a stage (the names may change and be in any language).
StageKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class StageKind(enum.StrEnum):
    """Open stages hold work in progress; a won or lost stage closes the deal."""

    open = "open"
    won = "won"
    lost = "lost"


def _check_required(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unknown = [v for v in value if v not in REQUIRABLE_FIELDS]
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; use {', '.join(REQUIRABLE_FIELDS)}")
    return list(dict.fromkeys(value))


class Pipeline(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A sales process: stages in order; deals move through them."""

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    name: str = Field(max_length=200)
    is_default: bool = Field(default=False)
    # Accepting a quote on one of this pipeline's deals marks the deal won.
    win_on_quote_acceptance: bool = Field(default=True)


class Stage(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """One step of a pipeline. Deleted stages are kept (deleted_at) so history stays valid."""

    __tablename__ = "stages"
    __table_args__ = (tenant_fk("stages", "pipeline_id", "pipelines", ondelete="CASCADE"),)

    pipeline_id: uuid.UUID = Field(index=True)
    key: str = Field(max_length=64)
    name: str = Field(max_length=200)
    name_en: str = Field(default="", max_length=200)
    position: int = Field(default=0)
    probability: Decimal = Field(default=Decimal("0"), sa_type=Numeric(5, 2))
    kind: StageKind = Field(default=StageKind.open, sa_type=String(8))
    required_fields: list[str] = JsonField(default_factory=list)
    rotting_days: int | None = Field(default=None)
    follow_up_interval_days: int | None = Field(default=None)
    deleted_at: datetime | None = TimestampField(nullable=True, default_now=False)


class StageCreate(Input):
    """A stage, when creating a pipeline or adding one to it (appended unless `position` is given)."""

    key: StageKey | None = None
    name: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    position: int | None = Field(default=None, ge=0)
    probability: Decimal = Field(default=Decimal("0"), ge=0, le=100, decimal_places=2)
    kind: StageKind = StageKind.open
    required_fields: list[str] = Field(default_factory=list)
    rotting_days: int | None = Field(default=None, ge=1)
    follow_up_interval_days: int | None = Field(default=None, ge=1)

    _required = field_validator("required_fields")(_check_required)


class StageUpdate(Patch):
    """PATCH a stage: renaming keeps history (it refers to the stage by id)."""

    not_null = ("name", "name_en", "probability", "required_fields")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    probability: Decimal | None = Field(default=None, ge=0, le=100, decimal_places=2)
    required_fields: list[str] | None = None
    rotting_days: int | None = Field(default=None, ge=1)
    follow_up_interval_days: int | None = Field(default=None, ge=1)

    _required = field_validator("required_fields")(_check_required)


class StageRead(SQLModel):
    """A stage as the API shows it."""

    id: uuid.UUID
    pipeline_id: uuid.UUID
    key: str
    name: str
    name_en: str
    position: int
    probability: Decimal
    kind: StageKind
    required_fields: list[str]
    rotting_days: int | None
    follow_up_interval_days: int | None
    version: int


class StageOrder(Input):
    """PUT the stage order: every live stage id, in the new order."""

    stage_ids: list[uuid.UUID] = Field(min_length=1)


class PipelineCreate(Input):
    """POST /v1/pipelines: a name and its stages in order (at least one won and one lost stage)."""

    name: str = Field(min_length=1, max_length=200)
    is_default: bool = False
    win_on_quote_acceptance: bool = True
    stages: list[StageCreate] = Field(min_length=2)


class PipelineUpdate(Patch):
    """PATCH /v1/pipelines/{id}."""

    not_null = ("name", "is_default", "win_on_quote_acceptance")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    is_default: bool | None = None
    win_on_quote_acceptance: bool | None = None


class PipelineRead(SQLModel):
    """A pipeline with its live stages in order."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    is_default: bool
    win_on_quote_acceptance: bool
    stages: list[StageRead]
    created_at: datetime
    updated_at: datetime
    version: int
