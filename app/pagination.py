"""Cursor pagination: `limit` (capped), opaque `cursor`, `next_cursor`; stable order by (key, id)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
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
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return datetime.fromisoformat(value["t"])
        if "u" in value:
            return uuid.UUID(value["u"])
        if "d" in value:
            return Decimal(value["d"])
    return value


def encode_cursor(sort: str, key: Any, row_id: uuid.UUID) -> str:
    """An opaque cursor pointing just after (key, id) in the `sort` order."""
    raw = json.dumps([sort, _encode(key), str(row_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, Any, uuid.UUID]:
    """The inverse of encode_cursor; a tampered cursor is a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sort, key, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return str(sort), _decode(key), uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(
            "The cursor is not one this API issued.",
            errors=[FieldError(field="cursor", code="invalid_cursor", message="malformed cursor")],
        ) from exc


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
    if page.cursor:
        cursor_sort, key, last_id = decode_cursor(page.cursor)
        if cursor_sort != sort:
            raise ValidationFailed(
                "The cursor belongs to another ordering; keep `sort` the same while paging.",
                errors=[FieldError(field="cursor", code="cursor_mismatch", message="sort changed")],
            )
        if descending:
            stmt = stmt.where(or_(column < key, and_(column == key, id_column < last_id)))
        else:
            stmt = stmt.where(or_(column > key, and_(column == key, id_column > last_id)))
    order = (column.desc(), id_column.desc()) if descending else (column.asc(), id_column.asc())
    rows = list((await session.execute(stmt.order_by(*order).limit(page.limit + 1))).scalars())
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        last = rows[-1]
        next_cursor = encode_cursor(sort, getattr(last, name), last.id)
    return rows, next_cursor
