"""Positions (cursors) and the SQL of an export page.

A position is (change_xid, change_seq, n): the writing transaction's id, the change sequence
value, and for quote lines the line's position within its quote (0 otherwise). Its cursor token
is the three as fixed-width hex (16 + 16 + 4 digits), so tokens sort as positions do: a loader
that keeps the greatest `export_cursor` it has seen (dlt's incremental does) resumes correctly.

A page is the rows after the cursor, in position order, among those whose writer is below the
horizon: the snapshot's xmin (`pg_snapshot_xmin(pg_current_snapshot())`), or past it up to the
first running transaction of this database (`loudou_export_horizon()`; transactions of other
databases on the server cannot write here). Every transaction of this database below the horizon
has ended and no new one can get an id below it, so nothing can later appear before a position
that was handed out. A transaction still writing holds the horizon back until it ends; then its
rows follow. Tombstones of the entity (deleted_rows) are merged into the same order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    Dialect,
    Select,
    Text,
    Uuid,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine
from sqlmodel import col

from app.errors import FieldError, ValidationFailed
from app.models.export import DeletedRow
from app.security import Principal
from app.services.export.registry import TOMBSTONE_COLUMNS, Entity, ExportColumn, Kind

TOKEN = re.compile(r"^[0-9a-f]{36}$")


@dataclass(frozen=True, order=True)
class Position:
    """Where a row stands in the export's order; its token is the cursor."""

    xid: int
    seq: int
    n: int = 0

    @property
    def token(self) -> str:
        """The cursor: fixed-width hex, so tokens sort as positions do."""
        return f"{self.xid:016x}{self.seq:016x}{self.n:04x}"

    @classmethod
    def parse(cls, token: str) -> Position:
        """The position of a cursor token; anything else is a 422."""
        if not TOKEN.match(token):
            raise ValidationFailed(
                "The cursor is not one this API issued.",
                errors=[
                    FieldError(field="cursor", code="invalid_cursor", message="36 lower-case hex digits")
                ],
            )
        return cls(int(token[:16], 16), int(token[16:32], 16), int(token[32:], 16))


START = Position(0, 0, 0)

# loudou_export_horizon() (see the migration): the snapshot's xmin, passing over transactions of
# other databases. A scalar subquery, so it runs once per statement.
_HORIZON_SQL = literal_column("(SELECT loudou_export_horizon())", BigInteger)

# How each kind is written: JSON formats keep booleans, dates, timestamps and JSON as such
# (row_to_json writes a timestamptz as RFC 3339, in UTC as the export transaction sets it); CSV
# (and the Parquet made from it) has them as text, timestamps as the very same text (see
# timestamp_text). Decimals are text in both, so every format carries exactly the same digits.
_JSON_NULL: ColumnElement[Any] = literal_column("'null'::jsonb")


def timestamp_text(expression: ColumnElement[Any]) -> ColumnElement[Any]:
    """A timestamptz as JSON writes it (`2026-11-30T09:15:00.123456+00:00`, fraction trimmed).

    Made from the ISO text output (`2026-11-30 09:15:00.123456+00`, the same trimmed fraction),
    which is several times cheaper than going through to_json; it needs the session's DateStyle
    ISO and TimeZone UTC, which the export's transaction sets (app.services.export.stream)."""
    text = func.replace(cast(expression, Text), literal_column("' '"), literal_column("'T'"))
    return text.op("||")(literal_column("':00'"))


def _timestamp(expression: ColumnElement[Any], tabular: bool) -> ColumnElement[Any]:
    return timestamp_text(expression) if tabular else expression


def _output_type(kind: Kind, tabular: bool) -> TypeEngine[Any]:
    if kind == Kind.uuid:
        return Uuid()
    if kind == Kind.integer:
        return BigInteger()
    if kind == Kind.boolean:
        return Text() if tabular else Boolean()
    if kind == Kind.date:
        return Date()
    if kind == Kind.timestamp and not tabular:
        return DateTime(timezone=True)
    if kind == Kind.json:
        return JSONB()
    return Text()


def formatted(column: ExportColumn, expression: ColumnElement[Any], tabular: bool) -> ColumnElement[Any]:
    """The column as the export writes it."""
    if column.kind == Kind.timestamp:
        return _timestamp(expression, tabular)
    if column.kind == Kind.decimal:
        return cast(expression, Text)
    if column.kind == Kind.integer:
        return cast(expression, BigInteger)
    if column.kind == Kind.boolean and tabular:
        return cast(expression, Text)
    if column.kind == Kind.string:
        return cast(expression, Text)  # varchar(n) to text: every branch of the UNION the same type
    if column.kind == Kind.json:
        # A JSON null stored in the column is an empty cell in every format, as SQL NULL is (else
        # CSV and Parquet would carry the text "null" where NDJSON has null).
        return func.nullif(expression, _JSON_NULL)
    return expression


def output_names(entity: Entity) -> list[str]:
    """The published columns, in order."""
    return [c.name for c in entity.columns] + ["deleted_at", "reason", "export_cursor"]


def _values(position: Position, width: int) -> ColumnElement[Any]:
    parts = (position.xid, position.seq, position.n)[:width]
    return tuple_(*[literal(v, BigInteger) for v in parts])


# The cursor's bound parameters are named, so that a statement compiled once can be run from
# another position (the Parquet batches: see Template).
AFTER_PARAMS = ("after_xid", "after_seq", "after_n")


def after_values(position: Position) -> dict[str, int]:
    """The named parameters of `after` for a position."""
    return dict(zip(AFTER_PARAMS, (position.xid, position.seq, position.n), strict=True))


def _after(stamps: tuple[ColumnElement[int], ...], position: Position) -> ColumnElement[bool]:
    values = after_values(position)
    params = [bindparam(name, values[name], type_=BigInteger) for name in AFTER_PARAMS[: len(stamps)]]
    after: ColumnElement[bool] = tuple_(*stamps) > tuple_(*params)
    return after


def _upto(stamps: tuple[ColumnElement[int], ...], position: Position) -> ColumnElement[bool]:
    upto: ColumnElement[bool] = tuple_(*stamps) <= _values(position, len(stamps))
    return upto


@dataclass(frozen=True)
class PageBounds:
    """Which rows a page holds: after `after`, up to `upto` (None: up to the horizon)."""

    after: Position
    upto: Position | None
    since: datetime | None


def _live_branch(
    entity: Entity, principal: Principal, bounds: PageBounds, *, keys_only: bool, tabular: bool
) -> Select[Any]:
    stamps = entity.stamps
    order_n: ColumnElement[Any] = stamps[2] if len(stamps) == 3 else literal(0, BigInteger)
    columns: list[ColumnElement[Any]] = []
    if not keys_only:
        gone = entity.soft_deleted.is_not(None) if entity.soft_deleted is not None else None
        for column in entity.columns:
            value = formatted(column, column.expression, tabular)
            if gone is not None and column.name not in ("id", "updated_at"):
                value = case((gone, null()), else_=value)  # a tombstone carries nothing else
            columns.append(value.label(column.name))
        if entity.soft_deleted is not None and gone is not None:
            columns.append(_timestamp(entity.soft_deleted, tabular).label("deleted_at"))
            columns.append(case((gone, literal("deleted")), else_=null()).label("reason"))
        else:
            columns.append(cast(null(), _output_type(Kind.timestamp, tabular)).label("deleted_at"))
            columns.append(cast(null(), Text).label("reason"))
    columns += [stamps[0].label("_x"), stamps[1].label("_s"), cast(order_n, BigInteger).label("_o")]
    stmt = select(*columns).select_from(entity.source).where(entity.org_id == principal.org_id)
    stmt = stmt.where(*entity.conditions, _after(stamps, bounds.after))
    stmt = stmt.where(_upto(stamps, bounds.upto) if bounds.upto else stamps[0] < _HORIZON_SQL)
    visible = entity.visibility(principal)
    if visible is not None:
        stmt = stmt.where(visible)
    if bounds.since is not None:
        stmt = stmt.where(entity.updated >= bounds.since)
    return stmt.order_by(*stamps)  # so the UNION's order is a Merge Append of index scans


def _tombstone_branch(
    entity: Entity, principal: Principal, bounds: PageBounds, *, keys_only: bool, tabular: bool
) -> Select[Any]:
    table = DeletedRow.__table__  # type: ignore[attr-defined]
    stamps = (table.c.change_xid, table.c.change_seq)
    columns: list[ColumnElement[Any]] = []
    if not keys_only:
        when = _timestamp(table.c.deleted_at, tabular)
        for column in entity.columns:
            if column.name == "id":
                columns.append(table.c.row_id.label("id"))
            elif column.name == "updated_at":
                columns.append(when.label("updated_at"))
            else:
                columns.append(cast(null(), _output_type(column.kind, tabular)).label(column.name))
        columns += [when.label("deleted_at"), cast(table.c.reason, Text).label("reason")]
    columns += [stamps[0].label("_x"), stamps[1].label("_s"), literal(0, BigInteger).label("_o")]
    stmt = select(*columns).where(
        col(DeletedRow.org_id) == principal.org_id,
        col(DeletedRow.entity) == entity.name,
        _after(stamps, bounds.after),
        _upto(stamps, bounds.upto) if bounds.upto else stamps[0] < _HORIZON_SQL,
    )
    if bounds.since is not None:
        stmt = stmt.where(col(DeletedRow.deleted_at) >= bounds.since)
    return stmt.order_by(*stamps)


def _union(
    entity: Entity,
    principal: Principal,
    bounds: PageBounds,
    *,
    keys_only: bool,
    tabular: bool,
    tombstones: bool = True,
) -> Any:
    live = _live_branch(entity, principal, bounds, keys_only=keys_only, tabular=tabular)
    if not tombstones:  # none in the page (tombstones_statement): the table's rows alone
        return live.subquery("u")
    return union_all(
        live, _tombstone_branch(entity, principal, bounds, keys_only=keys_only, tabular=tabular)
    ).subquery("u")


def tombstones_statement(entity: Entity, principal: Principal, bounds: PageBounds) -> Select[Any]:
    """Whether the page holds any tombstone (one probe of the deleted_rows index): a page without
    any is read from the entity's table alone, without the merge."""
    branch = _tombstone_branch(entity, principal, bounds, keys_only=True, tabular=False)
    return select(branch.order_by(None).exists())


def _order(entity: Entity, u: Any) -> list[Any]:
    """Position order. change_seq alone is unique, so a table entity orders by (change_xid,
    change_seq), which both branches' indexes give; with each branch ordered too, PostgreSQL
    merges them (Merge Append) instead of sorting the page (it does not find that plan for a
    union of unordered branches). Quote lines add their position within the quote."""
    return [u.c._x, u.c._s, u.c._o] if len(entity.stamps) == 3 else [u.c._x, u.c._s]


def page_end_statements(
    entity: Entity, principal: Principal, bounds: PageBounds, limit: int
) -> tuple[Select[Any], Select[Any], Select[Any]]:
    """How a page's end is found, each a streaming scan of the keys after the cursor (no sort,
    nothing materialised, however large the page), all in one snapshot:
    - `nth`: the positions of the limit-th and the (limit + 1)-th row: a full page, and whether
      more rows follow;
    - else (fewer rows than the limit) `last`: the last row's position, and `count`: how many."""
    u = _union(entity, principal, bounds, keys_only=True, tabular=False)
    order = _order(entity, u)
    keys = select(u.c._x, u.c._s, u.c._o)
    nth = keys.order_by(*order).offset(limit - 1).limit(2)
    last = keys.order_by(*[c.desc() for c in order]).limit(1)
    first = keys.order_by(*order).limit(limit).subquery("k")
    count = select(func.count()).select_from(first)
    return nth, last, count


def _hex(value: ColumnElement[Any], width: int) -> ColumnElement[str]:
    return func.lpad(func.to_hex(value), literal_column(str(width)), literal_column("'0'"))


def _cursor_column(entity: Entity, u: Any) -> ColumnElement[str]:
    """Position.token in SQL: xid and seq as 16 hex digits each (their big-endian bytes in hex,
    a third of the cost of lpad(to_hex(…))), then n in 4; n is always 0 but for quote lines."""
    stamps = func.int8send(u.c._x).op("||")(func.int8send(u.c._s))
    last = _hex(u.c._o, 4) if len(entity.stamps) == 3 else literal_column("'0000'")
    token: ColumnElement[str] = func.encode(stamps, literal_column("'hex'")).op("||")(last)
    return token.label("export_cursor")


def rows_statement(
    entity: Entity,
    principal: Principal,
    bounds: PageBounds,
    *,
    tabular: bool,
    limit: int | None = None,
    tombstones: bool = True,
) -> Select[Any]:
    """The page's rows, published columns only, in position order."""
    u = _union(entity, principal, bounds, keys_only=False, tabular=tabular, tombstones=tombstones)
    names = [c.name for c in entity.columns] + ["deleted_at", "reason"]
    stmt = select(*[u.c[name] for name in names], _cursor_column(entity, u)).order_by(*_order(entity, u))
    return stmt.limit(limit) if limit is not None else stmt


def ndjson_statement(
    entity: Entity, principal: Principal, bounds: PageBounds, *, tombstones: bool = True
) -> Select[Any]:
    """One JSON object per row: every column, or for a tombstone only its five columns."""
    rows = rows_statement(entity, principal, bounds, tabular=False, tombstones=tombstones).subquery("j")
    whole = func.row_to_json(literal_column("j"))
    if not tombstones and entity.soft_deleted is None:  # every row is a whole one
        return select(cast(whole, Text)).select_from(rows)
    tombstone = func.json_build_object(*[part for name in TOMBSTONE_COLUMNS for part in (name, rows.c[name])])
    return select(cast(case((rows.c.deleted_at.is_(None), whole), else_=tombstone), Text))


class Template:
    """A statement compiled once to `$n` SQL for asyncpg, whose named parameters can be given
    other values on each run (bind processors applied as SQLAlchemy would)."""

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        self.sql = compiled.string
        self._params = dict(compiled.params)
        self._order = list(compiled.positiontup or ())
        self._process = {
            name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._order
        }

    def args(self, **values: Any) -> list[Any]:
        """The arguments in `$n` order, with `values` in place of the compiled ones."""
        out = []
        for name in self._order:
            value = values[name] if name in values else self._params[name]
            process = self._process[name]
            out.append(process(value) if process else value)
        return out


def compile_for_driver(stmt: Select[Any], dialect: Dialect) -> tuple[str, list[Any]]:
    """`$n` SQL and its arguments for asyncpg (bind processors applied as SQLAlchemy would)."""
    template = Template(stmt, dialect)
    return template.sql, template.args()
