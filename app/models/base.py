"""Column helpers and mixins shared by every table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from sqlalchemy import DateTime, ForeignKeyConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlmodel import Field, SQLModel
from uuid_utils.compat import uuid7

from app.db import TenantScoped

M = TypeVar("M", bound=SQLModel)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A new primary key: a UUIDv7 (RFC 9562), its first 48 bits the creation time in
    milliseconds. New rows of a table land at the right edge of its primary key index instead of
    on a random page of it: on an organisation of a million leads, the random pages of the keys
    a post writes (lead, touch, inbound event, outbox row, funnel facts) no longer fit in
    PostgreSQL's buffers, and every post read and dirtied pages all over them. Ids are not
    secrets (every read is authenticated and scoped to its organisation; keys and tokens come
    from `secrets`); like Pipedrive's and HubSpot's sequential ids, they carry their order."""
    return uuid7()


def TimestampField(*, nullable: bool = False, index: bool = False, default_now: bool = True) -> Any:
    """A `timestamptz` column (sqlmodel's default DateTime is naive)."""
    if default_now:
        return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=nullable, index=index)
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=nullable, index=index)


def JsonField(*, default_factory: Any = dict, nullable: bool = False) -> Any:
    """A JSONB column."""
    return Field(default_factory=default_factory, sa_type=JSONB, nullable=nullable)


class IdMixin(SQLModel):
    """UUID primary key."""

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)


class TimestampsMixin(SQLModel):
    """created_at / updated_at, both timestamptz."""

    created_at: datetime = TimestampField(index=True)
    updated_at: datetime = TimestampField(index=True)


class VersionMixin(SQLModel):
    """A counter bumped on every update; it is the ETag of the row."""

    version: int = Field(default=1, nullable=False)


class TenantMixin(TenantScoped, SQLModel):
    """org_id on a tenant table, first column of its primary key `(org_id, id)`; queries are
    scoped by it (see app.db), and on Citus it is the distribution column (docs/scale.md)."""

    # Filled from the session's organisation on flush (app.db), so constructors need not pass it.
    # No index of its own: the primary key (org_id, id) starts with it.
    org_id: uuid.UUID = Field(
        default=None, primary_key=True, foreign_key="organisations.id", ondelete="CASCADE"
    )


def tenant_fk(table: str, column: str, target: str, *, ondelete: str, **options: Any) -> ForeignKeyConstraint:
    """The foreign key `table (org_id, column) -> target (org_id, id)`: a row can only point at a
    row of its own organisation, which the database checks (and Citus co-locates).

    A nullable `column` with a NULL value skips the check (MATCH SIMPLE). `SET NULL` clears
    `column` alone, never org_id (`ON DELETE SET NULL (column)`, PostgreSQL 15+). The name is the
    one the single-column key had (`fk_<table>_<column>_<target>`)."""
    action = f"SET NULL ({column})" if ondelete == "SET NULL" else ondelete
    return ForeignKeyConstraint(
        ["org_id", column],
        [f"{target}.org_id", f"{target}.id"],
        name=f"fk_{table}_{column}_{target}",
        ondelete=action,
        **options,
    )


def column_values(model: type[SQLModel], values: dict[str, Any]) -> dict[str, Any]:
    """Every field of `model`: the given values, else the field's default (factories called
    directly; pydantic inspects a factory's signature on every call, which costs more than the
    factory itself)."""
    row: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in values:
            row[name] = values[name]
        elif info.default_factory is not None:
            row[name] = info.default_factory()  # type: ignore[call-arg]
        else:
            row[name] = None if info.default is PydanticUndefined else info.default
    return row


def build(model: type[M], **values: Any) -> M:
    """A new (transient) row object with its defaults filled, as `model(**values)` makes it but
    about ten times cheaper: the instance is created by SQLAlchemy's class manager and its
    attributes are stored at once, not set one by one through the instrumentation (a table
    model's constructor does not validate either). An INSERT of a new object reads these stored
    values, so it may be added to a session as usual."""
    manager = manager_of_class(model)
    obj: M = manager.new_instance()
    obj.__dict__.update(column_values(model, values))
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj
