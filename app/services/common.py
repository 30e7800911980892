"""Helpers every domain service uses: load-or-404, optimistic updates with a field diff."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi.encoders import jsonable_encoder
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from app.errors import Conflict, NotFound, PreconditionFailed
from app.models.base import utcnow
from app.models.organisation import Organisation, OrganisationSettings

M = TypeVar("M", bound=SQLModel)


async def settings_of(session: AsyncSession, org_id: uuid.UUID) -> OrganisationSettings:
    """The organisation's typed settings."""
    org = await session.get(Organisation, org_id)
    return org.typed_settings() if org is not None else OrganisationSettings()


def local_today(settings: OrganisationSettings, now: datetime | None = None) -> date:
    """Today's date in the organisation's timezone: business dates are the organisation's."""
    return (now or utcnow()).astimezone(ZoneInfo(settings.timezone)).date()


async def org_today(session: AsyncSession, org_id: uuid.UUID) -> date:
    """Today in the organisation's timezone."""
    return local_today(await settings_of(session, org_id))


async def get_or_404(
    session: AsyncSession, model: type[M], obj_id: uuid.UUID, *, what: str, lock: bool = False
) -> M:
    """The row with this id in the caller's organisation (locked FOR UPDATE with `lock`), else
    NotFound (another org's rows too)."""
    obj = await session.get(model, obj_id, with_for_update=lock or None)
    if obj is None:
        raise NotFound(f"No {what} with id {obj_id}.")
    return obj


def check_version(obj: Any, expected: int | None) -> None:
    """412 when the client's If-Match version is not the row's current one."""
    if expected is not None and expected != obj.version:
        raise PreconditionFailed(
            f"Version {expected} is stale; the current version is {obj.version}.",
            headers={"ETag": f'"{obj.version}"'},
            extra={"current_version": obj.version},
        )


def apply_changes(obj: Any, data: dict[str, Any], *, expected_version: int | None = None) -> dict[str, Any]:
    """Set the given fields; return {field: [old, new]} for those that changed. Bumps version."""
    check_version(obj, expected_version)
    diff: dict[str, Any] = {}
    for name, value in data.items():
        old = getattr(obj, name)
        if old != value:
            diff[name] = jsonable_encoder([old, value])
            setattr(obj, name, value)
    if diff:
        if hasattr(obj, "version"):
            obj.version += 1
        if hasattr(obj, "updated_at"):
            obj.updated_at = utcnow()
    return diff


def snapshot(obj: Any, fields: list[str]) -> dict[str, Any]:
    """{field: [None, value]} for a newly created row, for the audit log."""
    return {name: jsonable_encoder([None, getattr(obj, name)]) for name in fields}


async def flush_unique(session: AsyncSession, conflict: str) -> None:
    """Flush inside a savepoint; a unique-constraint violation becomes a 409 saying `conflict`."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


async def next_number(session: AsyncSession, org_id: uuid.UUID, kind: str, year: int) -> int:
    """The next gap-free number of `kind` for the organisation and year.

    The counter row stays locked (the upsert's row lock) until the transaction ends, so concurrent
    creations queue on it, and a rolled-back creation gives its number back. A SEQUENCE would not.
    """
    result = await session.execute(
        text(
            "INSERT INTO document_counters (id, org_id, kind, year, last_value) "
            "VALUES (gen_random_uuid(), :org, :kind, :year, 1) "
            "ON CONFLICT (org_id, kind, year) "
            "DO UPDATE SET last_value = document_counters.last_value + 1 "
            "RETURNING last_value"
        ),
        {"org": org_id, "kind": kind, "year": year},
    )
    return int(result.scalar_one())


LIKE_ESCAPE = "\\"


def contains(column: Any, q: str) -> Any:
    """`column ILIKE '%q%'` with q's own `%`, `_` and `\\` taken literally (not as wildcards)."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape=LIKE_ESCAPE)
