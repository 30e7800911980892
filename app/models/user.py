"""Users and teams."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ConfigDict, field_validator
from sqlalchemy import String, UniqueConstraint
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
from app.models.common import EmailAddress, Input, Patch, Role, TimezoneName

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _check_working_hours(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Working hours look like {"mon": ["09:00", "18:00"], ...}; days left out are days off."""
    if value is None:
        return None
    for day, span in value.items():
        if day not in WEEKDAYS:
            raise ValueError(f"unknown weekday {day!r}; use {', '.join(WEEKDAYS)}")
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(t, str) for t in span)):
            raise ValueError(f'{day}: expected ["HH:MM", "HH:MM"]')
        start, end = span
        for t in (start, end):
            hh, _, mm = t.partition(":")
            if not (hh.isdigit() and mm.isdigit() and 0 <= int(hh) <= 24 and 0 <= int(mm) < 60):
                raise ValueError(f"{day}: {t!r} is not HH:MM")
        if start >= end:
            raise ValueError(f"{day}: start must be before end")
    return value


class Team(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A sales team: a manager and members (users whose team_id is this team)."""

    __tablename__ = "teams"
    __table_args__ = (
        UniqueConstraint("org_id", "name"),
        # use_alter: teams and users point at each other, so this key is added after both tables exist.
        tenant_fk("teams", "manager_id", "users", ondelete="SET NULL", use_alter=True),
    )

    name: str = Field(max_length=200)
    manager_id: uuid.UUID | None = Field(default=None)


class User(IdMixin, TenantMixin, TimestampsMixin, VersionMixin, table=True):
    """A person who signs in: a sales rep, a manager, an admin or a read-only viewer."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("org_id", "email"),
        tenant_fk("users", "team_id", "teams", ondelete="SET NULL"),
    )

    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=200)
    role: Role = Field(default=Role.rep, sa_type=String(16))
    team_id: uuid.UUID | None = Field(default=None, index=True)
    active: bool = Field(default=True)
    capacity: int | None = Field(default=None, ge=0)
    weight: int = Field(default=1, ge=0)
    timezone: str = Field(default="UTC", max_length=64)
    working_hours: dict[str, Any] | None = JsonField(default_factory=lambda: None, nullable=True)
    password_hash: str | None = Field(default=None, max_length=255)
    # Finance permission (回款确认): confirms and rejects payments; admins always have it.
    finance: bool = Field(default=False)
    last_login_at: datetime | None = TimestampField(nullable=True, default_now=False)


class UserCreate(Input):
    """POST /v1/users."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.USER_CREATE))

    email: EmailAddress
    name: str = Field(default="", max_length=200)
    role: Role = Role.rep
    team_id: uuid.UUID | None = None
    active: bool = True
    capacity: int | None = Field(default=None, ge=0)
    weight: int = Field(default=1, ge=0, le=1000)
    timezone: TimezoneName = "UTC"
    working_hours: dict[str, Any] | None = None
    finance: bool = False
    password: str | None = Field(default=None, min_length=8, max_length=200)

    _hours = field_validator("working_hours")(_check_working_hours)


class UserUpdate(Patch):
    """PATCH /v1/users/{id}: only what is sent changes."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.USER_UPDATE))  # type: ignore[assignment]
    not_null = ("email", "role", "active", "weight", "timezone", "finance")

    email: EmailAddress | None = None
    name: str | None = Field(default=None, max_length=200)
    role: Role | None = None
    team_id: uuid.UUID | None = None
    active: bool | None = None
    capacity: int | None = Field(default=None, ge=0)
    weight: int | None = Field(default=None, ge=0, le=1000)
    timezone: TimezoneName | None = None
    working_hours: dict[str, Any] | None = None
    finance: bool | None = None

    _hours = field_validator("working_hours")(_check_working_hours)


class UserRead(SQLModel):
    """A user as the API shows it (never the password hash)."""

    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    name: str
    role: Role
    team_id: uuid.UUID | None
    active: bool
    capacity: int | None
    weight: int
    timezone: str
    working_hours: dict[str, Any] | None
    finance: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class PasswordChange(Input):
    """POST /v1/users/{id}/password: your own needs the current one; an admin resets anyone's."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.PASSWORD_CHANGE))

    current_password: str | None = Field(default=None, max_length=200)
    new_password: str = Field(min_length=8, max_length=200)


class TeamCreate(Input):
    """POST /v1/teams."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TEAM_CREATE))

    name: str = Field(min_length=1, max_length=200)
    manager_id: uuid.UUID | None = None
    member_ids: list[uuid.UUID] = Field(default_factory=list)


class TeamUpdate(Patch):
    """PATCH /v1/teams/{id}."""

    model_config = ConfigDict(json_schema_extra=ex.examples(ex.TEAM_UPDATE))  # type: ignore[assignment]
    not_null = ("name",)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    manager_id: uuid.UUID | None = None
    member_ids: list[uuid.UUID] | None = None


class TeamRead(SQLModel):
    """A team with its member ids."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    manager_id: uuid.UUID | None
    member_ids: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime
    version: int
