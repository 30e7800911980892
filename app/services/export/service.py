"""The incremental export: the published catalogue, and planning one page (DESIGN §7).

Planning a page finds where it ends (one key-only query in its own snapshot), so the cursor to
resume from can go in a response header before the body is streamed; the body is then read in a
snapshot of its own (app.services.export.stream). Rows between the cursor and the page's end all
come from transactions that had ended when the end was found, so the later read finds the same
rows, less any that changed since (they come again, with their new values, on a later page).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.errors import FieldError, Forbidden, NotFound, ValidationFailed
from app.models.export import ExportCatalog, ExportChangeTracking, ExportColumnInfo, ExportEntityInfo
from app.security import Principal
from app.services import audit
from app.services.export.query import START, PageBounds, Position, output_names, page_end_statements
from app.services.export.registry import (
    ENTITIES,
    TOMBSTONE_COLUMNS,
    TRAILING_COLUMNS,
    Entity,
    ExportColumn,
    arrow_type,
)

DEFINITION_VERSION = 1
SCOPE = "export:read"
CURSOR_HEADER = "Loudou-Next-Cursor"
HAS_MORE_HEADER = "Loudou-Has-More"
EXPORT_ID_HEADER = "Loudou-Export-Id"
EXPORT_HEADERS = (CURSOR_HEADER, HAS_MORE_HEADER, EXPORT_ID_HEADER)
LIMIT_DEFAULT = 10_000
LIMIT_MAX = 1_000_000
# The change order needs no time window: a row is held back only while an older writing
# transaction is still open (see app.services.export.query).
LAG_SECONDS = 0


class ExportFormat(enum.StrEnum):
    """What a page is written as."""

    ndjson = "ndjson"
    csv = "csv"
    parquet = "parquet"
    json = "json"


MEDIA_TYPES = {
    ExportFormat.ndjson: "application/x-ndjson",
    ExportFormat.csv: "text/csv; charset=utf-8; header=present",
    ExportFormat.parquet: "application/vnd.apache.parquet",
    ExportFormat.json: "application/json",
}


def _column_info(column: ExportColumn) -> ExportColumnInfo:
    return ExportColumnInfo(
        name=column.name,
        type=column.kind.value,
        precision=column.precision,
        scale=column.scale,
        parquet_type=str(arrow_type(column)),
    )


def catalog() -> ExportCatalog:
    """Every exported entity with its columns and types, and how paging and tracking work."""
    return ExportCatalog(
        definition_version=DEFINITION_VERSION,
        cursor_header=CURSOR_HEADER,
        has_more_header=HAS_MORE_HEADER,
        formats=[f.value for f in ExportFormat],
        limit_default=LIMIT_DEFAULT,
        limit_max=LIMIT_MAX,
        scope=SCOPE,
        change_tracking=ExportChangeTracking(
            method="xid_horizon",
            lag_seconds=LAG_SECONDS,
            order="(change_xid, change_seq): the writing transaction's id, then a change sequence",
            description=(
                "A page holds rows written by transactions older than the oldest one still running "
                "when it is read, in commit-safe order, so no row is ever skipped: a transaction that "
                "is still writing holds the cursor back until it ends, then its rows follow. A row "
                "appears again each time it changes (upsert by id); deletions come as tombstones "
                f"with only {', '.join(TOMBSTONE_COLUMNS)} set. Duplicates: none within a cursor "
                "chain except a row's later versions; starting again from updated_since repeats rows."
            ),
        ),
        tombstone_columns=list(TOMBSTONE_COLUMNS),
        entities=[
            ExportEntityInfo(
                name=e.name,
                description=e.description,
                primary_key=list(e.primary_key),
                columns=[_column_info(c) for c in (*e.columns, *TRAILING_COLUMNS)],
            )
            for e in ENTITIES.values()
        ],
    )


@dataclass(frozen=True)
class PagePlan:
    """One export page: whose, of what, which rows, and where the next one starts."""

    export_id: uuid.UUID
    entity: Entity
    principal: Principal
    format: ExportFormat
    bounds: PageBounds
    next_position: Position
    has_more: bool
    rows: int

    @property
    def empty(self) -> bool:
        """Caught up: nothing after the cursor yet."""
        return self.bounds.upto is None

    @property
    def columns(self) -> list[str]:
        """The published columns, in order."""
        return output_names(self.entity)


def entity_named(name: str) -> Entity:
    """The registry entry, else 404 naming the entities there are."""
    entity = ENTITIES.get(name)
    if entity is None:
        raise NotFound(f"No exported entity {name!r}; GET /v1/export lists them ({', '.join(ENTITIES)}).")
    return entity


def check_scope(principal: Principal) -> None:
    """Exports need `export:read` on the key (other read scopes do not grant it)."""
    if not principal.allows(SCOPE):
        raise Forbidden(f"This credential may not do `{SCOPE}`: give the API key that scope (or `*`).")


async def plan_page(
    session: AsyncSession,
    engine: AsyncEngine,
    principal: Principal,
    entity_name: str,
    *,
    export_format: ExportFormat,
    cursor: str | None,
    updated_since: datetime | None,
    limit: int | None,
) -> PagePlan:
    """Find the page after `cursor` (or from the start, optionally only rows updated since a time),
    at most `limit` rows; the export is audited in the caller's transaction."""
    check_scope(principal)
    entity = entity_named(entity_name)
    if updated_since is not None and updated_since.tzinfo is None:
        raise ValidationFailed(
            "updated_since needs a UTC offset.",
            errors=[FieldError(field="updated_since", code="naive_datetime", message="add Z or +hh:mm")],
        )
    after = Position.parse(cursor) if cursor else START
    size = min(limit or LIMIT_DEFAULT, LIMIT_MAX)
    probe = PageBounds(after=after, upto=None, since=updated_since)
    nth, last, count_rows = page_end_statements(entity, principal, probe, size)
    upto: Position | None = None
    # One snapshot for the three (the horizon included), so they agree.
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            found = (await conn.execute(nth)).all()
            if found:  # a full page; more rows follow if there is a (limit + 1)-th
                end, count, has_more = found[0], size, len(found) > 1
            else:
                end, count, has_more = (await conn.execute(last)).first(), 0, False
                if end is not None:
                    count = int((await conn.execute(count_rows)).scalar_one())
    if end is not None:
        upto = Position(int(end._x), int(end._s), int(end._o))
    plan = PagePlan(
        export_id=uuid.uuid4(),
        entity=entity,
        principal=principal,
        format=export_format,
        bounds=PageBounds(after=after, upto=upto, since=updated_since),
        next_position=upto or after,
        has_more=has_more,
        rows=min(count, size),
    )
    changes: dict[str, Any] = {
        "entity": entity.name,
        "format": export_format.value,
        "cursor": cursor,
        "updated_since": updated_since.isoformat() if updated_since else None,
        "limit": size,
        "rows": plan.rows,
        "next_cursor": plan.next_position.token,
    }
    audit.record(
        session, actor=principal, entity="export", entity_id=plan.export_id, action="export", changes=changes
    )
    return plan
