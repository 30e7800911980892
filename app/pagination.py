"""Cursor pagination: `limit` (capped), opaque `cursor`, `next_cursor`; stable order by (key, id)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, ValidationFailed

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; `next_cursor` is null on the last page."""

    data: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PageParams:
    """What the client asked for: a page size, where to continue, and an ordering."""

    limit: int
    cursor: str | None
    sort: str | None


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, date):
        return {"D": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return datetime.fromisoformat(value["t"])
        if "D" in value:
            return date.fromisoformat(value["D"])
        if "u" in value:
            return uuid.UUID(value["u"])
        if "d" in value:
            return Decimal(value["d"])
    return value


def encode_cursor(sort: str, key: Any, row_id: uuid.UUID) -> str:
    """An opaque cursor pointing just after (key, id) in the `sort` order."""
    raw = json.dumps([sort, _encode(key), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _bad_cursor() -> ValidationFailed:
    return ValidationFailed(
        "The cursor is not one this API issued.",
        errors=[FieldError(field="cursor", code="invalid_cursor", message="malformed cursor")],
    )


def decode_cursor(cursor: str) -> tuple[str, Any, uuid.UUID]:
    """The inverse of encode_cursor; a tampered cursor is a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sort, key, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return str(sort), _decode(key), uuid.UUID(str(row_id))
    except (ValueError, TypeError, RecursionError) as exc:
        raise _bad_cursor() from exc


def _nullable(column: Any) -> bool:
    expression = getattr(column, "expression", column)
    return bool(getattr(expression, "nullable", True))


def _check_key(column: Any, key: Any) -> None:
    """A cursor key must have the column's type, else the database would fail on it (a 500)."""
    if key is None:
        return
    sql_type = getattr(column, "type", None)
    sql_type = getattr(sql_type, "impl_instance", sql_type)  # a TypeDecorator (sqlmodel's AutoString)
    try:
        expected: type = sql_type.python_type if sql_type is not None else object
    except (AttributeError, NotImplementedError):
        expected = object
    if expected is datetime:
        ok = isinstance(key, datetime) and key.tzinfo is not None
    elif expected is date:
        ok = isinstance(key, date) and not isinstance(key, datetime)
    elif expected is int:
        ok = isinstance(key, int) and not isinstance(key, bool)
    elif expected is Decimal:
        ok = isinstance(key, Decimal) and key.is_finite()
    elif expected is str:
        ok = isinstance(key, str)
    else:
        ok = isinstance(key, str | int | float | bool | uuid.UUID) and not isinstance(key, dict | list)
    if not ok:
        raise _bad_cursor()


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    page: PageParams,
    *,
    id_column: Any,
    sortable: dict[str, Any],
    default_sort: str = "-created_at",
) -> tuple[list[Any], str | None]:
    """Run `stmt` ordered by the requested key then id, one page after the cursor.

    Columns are model attributes (typed loosely: SQLModel declares them as their Python types).

    `sort` is a field name, prefixed with `-` for descending; only `sortable` names are allowed.
    Rows whose sort key is NULL come last in either direction and are paged by id.
    """
    sort = page.sort or default_sort
    descending = sort.startswith("-")
    name = sort.lstrip("-+")
    if name not in sortable:
        raise ValidationFailed(
            f"Cannot sort by {name!r}.",
            errors=[
                FieldError(
                    field="sort",
                    code="invalid_sort",
                    message=f"one of {', '.join(sorted(sortable))}, optionally prefixed with '-'",
                )
            ],
        )
    column = sortable[name]
    nullable = _nullable(column)
    if page.cursor:
        cursor_sort, key, last_id = decode_cursor(page.cursor)
        if cursor_sort != sort:
            raise ValidationFailed(
                "The cursor belongs to another ordering; keep `sort` the same while paging.",
                errors=[FieldError(field="cursor", code="cursor_mismatch", message="sort changed")],
            )
        _check_key(column, key)
        after_id = id_column < last_id if descending else id_column > last_id
        if key is None:  # among the NULLs, which come last in both directions
            stmt = stmt.where(column.is_(None), after_id)
        else:
            beyond = column < key if descending else column > key
            later = [beyond, and_(column == key, after_id)]
            stmt = stmt.where(or_(*later, column.is_(None)) if nullable else or_(*later))
    if descending:
        # NULLs last whichever the direction, so a page after the last value still reaches them;
        # a NOT NULL column keeps the plain order its index serves.
        order = (column.desc().nulls_last() if nullable else column.desc(), id_column.desc())
    else:
        order = (column.asc(), id_column.asc())  # PostgreSQL puts NULLs last when ascending
    rows = list((await session.execute(stmt.order_by(*order).limit(page.limit + 1))).scalars())
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        last = rows[-1]
        next_cursor = encode_cursor(sort, getattr(last, name), last.id)
    return rows, next_cursor
