"""Rows written without the ORM: the intake fast path's building blocks. The only module that may
write rows that way; everything else goes through the session.

Why it exists: a web-form post that makes a new lead is the busiest request Loudou serves, and the
ORM costs it several times its CPU. A table model's constructor sets every field through
SQLAlchemy's instrumentation while pydantic inspects each default factory's signature (about
580 µs for a `Lead`; `build` makes the same object in about 20 µs), and BEGIN, the lock, the
look-up, the inserts and COMMIT through the session are each a round trip and Python of their own.
So `leads.ingest.ingest_direct` writes a new lead, its touch, its lead.created outbox row and its
inbound event with one statement (`insert_together`: data-modifying CTEs that first take the
dedupe locks and insert only when no open lead has the email or phone), sent straight to asyncpg
in autocommit (`app.db.direct_statements`); `insert_batch` does the same for the posts of a batch
(`leads.batch`) in one statement. The rows are the ones the session path
(`leads.ingest.ingest`) writes through the ORM; tests/services/leads/test_direct.py holds the two
paths to identical rows, server defaults included.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import JSON, Column, Dialect, Table, Text, TextClause, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlmodel import SQLModel

from app.db import Statements
from app.models.base import M, build, column_values


def new_row(model: type[SQLModel], **values: Any) -> tuple[Table, dict[str, Any]]:
    """A new row of `model` as (table, column values) with the model's defaults filled in, for
    `insert_together`; cheaper still than an object from `build`."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table, column_values(model, values)


def as_row(obj: Any) -> tuple[Table, dict[str, Any]]:
    """An ORM object's table and column values, for `insert_together` (read from the instance's
    dict where they are, as they are for an object from `build`)."""
    table: Table = obj.__table__
    stored = obj.__dict__
    return table, {c.name: stored[c.key] if c.key in stored else getattr(obj, c.key) for c in table.columns}


def lock_keys(org_id: uuid.UUID, email: str | None, phone: str | None) -> list[str]:
    """The advisory lock keys of an email/phone in an organisation, sorted (no deadlocks)."""
    return sorted(
        f"lead:{org_id}:{name}:{value}" for name, value in (("email", email), ("phone", phone)) if value
    )


_TOGETHER: dict[tuple[tuple[str, ...], bool, bool], TextClause] = {}
_SQL_TYPES: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def _server_default(column: Column[Any]) -> str | None:
    """The SQL of a column's server default, if it has one."""
    default = column.server_default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    return str(arg.compile(dialect=_SQL_TYPES)) if arg is not None else None


def _value(column: Column[Any]) -> str:
    """One column's value in the statement, read from the row's JSON. A column with a server
    default gets it when the row leaves it None, as the ORM leaves such a column out of its
    INSERT."""
    value = f'r."{column.name}"'
    default = _server_default(column)
    if default is None and isinstance(column.type, JSON) and not column.type.none_as_null:
        default = "'null'::jsonb"  # None is JSON null in a JSON column, as SQLAlchemy writes it
    return f"COALESCE({value}, {default})" if default is not None else value


def _set_value(column: Column[Any]) -> str:
    """One column's new value in an UPDATE, read from the row's JSON: None is NULL (as the ORM
    writes it; no server default), or JSON null in a JSON column, as SQLAlchemy writes it."""
    value = f'r."{column.name}"'
    if isinstance(column.type, JSON) and not column.type.none_as_null:
        return f"COALESCE({value}, 'null'::jsonb)"
    return value


def _together_statement(tables: tuple[Table, ...], notify: bool, unless_open_lead: bool) -> TextClause:
    """`WITH new_0 AS (INSERT …), new_1 AS (INSERT …) SELECT pg_notify(…)`, built once per set of
    tables (building SQLAlchemy insert constructs per request costs more than the round trip).

    Each row travels as one JSON document, read back into the table's row type by
    `jsonb_populate_record` (each value through its column type's input): one parameter a row
    instead of one a column, which cost asyncpg more to encode than the rest of the statement.

    `unless_open_lead`: the statement first takes the lead locks and looks for an open lead
    (`loudou_lock_open_lead`, whose look-up sees what committed before it got the locks), inserts
    only when there is none, and answers the open lead's id (NULL when it inserted): lock, check
    and insert in one statement, which in autocommit is its own transaction, the locks held to
    its end."""
    key = (tuple(t.name for t in tables), notify, unless_open_lead)
    stmt = _TOGETHER.get(key)
    if stmt is None:
        parts: list[str] = []
        binds = []
        if unless_open_lead:
            parts.append(
                "found AS MATERIALIZED (SELECT loudou_lock_open_lead(:org, :email, :phone, :keys) AS id)"
            )
        for i, table in enumerate(tables):
            columns = list(table.columns)
            names = ", ".join(f'"{c.name}"' for c in columns)
            values = ", ".join(_value(c) for c in columns)
            row = f'jsonb_populate_record(NULL::"{table.name}", CAST(:r{i} AS jsonb))'
            rows = f"SELECT {values} FROM {row} AS r"
            if unless_open_lead:
                rows += " WHERE (SELECT id FROM found) IS NULL"
            parts.append(f'new_{i} AS (INSERT INTO "{table.name}" ({names}) {rows})')
            binds.append(bindparam(f"r{i}", type_=Text()))
        wake = "pg_notify(:notify_channel, '')" if notify else "NULL"
        final = f"SELECT id, {wake} FROM found" if unless_open_lead else f"SELECT NULL, {wake}"
        stmt = text("WITH " + ", ".join(parts) + " " + final).bindparams(*binds)
        _TOGETHER[key] = stmt
    return stmt


def _json_value(value: Any) -> Any:
    """What orjson cannot write itself: bytes (bytea's hex input), Decimal (numeric's input) and
    asyncpg's own UUID class (ids read back from the database)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


def row_json(values: dict[str, Any] | list[dict[str, Any]]) -> str:
    """A row's column values as the JSON that `jsonb_populate_record` reads (a list of rows:
    `jsonb_populate_recordset`)."""
    return orjson.dumps(values, default=_json_value).decode()


async def insert_together(
    run: Statements,
    rows: list[tuple[Table, dict[str, Any]]],
    *,
    notify: str | None = None,
    unless_open_lead: tuple[str | None, str | None] | None = None,
) -> bool:
    """INSERT new rows of several tables in one round trip (data-modifying CTEs); foreign keys
    are checked at the end of the statement, so the order of `rows` does not matter. The rows
    stay outside any session.

    With `unless_open_lead=(email, phone)` (the first row being the new lead), nothing is
    inserted when the organisation has an open lead with that email or phone; False then."""
    return await insert_unless_open_lead(run, rows, notify=notify, unless_open_lead=unless_open_lead) is None


async def insert_unless_open_lead(
    run: Statements,
    rows: list[tuple[Table, dict[str, Any]]],
    *,
    notify: str | None = None,
    unless_open_lead: tuple[str | None, str | None] | None = None,
) -> Any:
    """`insert_together`, answering the id of the open lead that stopped the insert (None when
    the rows went in)."""
    tables = tuple(table for table, _ in rows)
    params: dict[str, Any] = {f"r{i}": row_json(values) for i, (_, values) in enumerate(rows)}
    if notify:
        params["notify_channel"] = notify
    if unless_open_lead is not None:
        org_id = rows[0][1]["org_id"]
        email, phone = unless_open_lead
        params.update(org=org_id, email=email, phone=phone, keys=lock_keys(org_id, email, phone))
    return await run.fetchval(_together_statement(tables, bool(notify), unless_open_lead is not None), params)


# --- The new leads of many posts in one statement -------------------------------------------

_BATCHES: dict[tuple[tuple[str, ...], bool], TextClause] = {}


def _batch_statement(tables: tuple[Table, ...], notify: bool) -> TextClause:
    """`insert_unless_open_lead` for many posts at once: `loudou_lock_open_leads` (migrations
    speed0010batches, speed0011setbased) takes every post's locks and finds each post's open
    lead, and each table's rows, one a post in the posts' order, go in where the post's answer is
    NULL. Built once per set of tables."""
    key = (tuple(t.name for t in tables), notify)
    stmt = _BATCHES.get(key)
    if stmt is None:
        parts = [
            "found AS MATERIALIZED (SELECT loudou_lock_open_leads(CAST(:orgs AS uuid[]),"
            " CAST(:emails AS text[]), CAST(:phones AS text[]), CAST(:keys AS text[])) AS ids)"
        ]
        binds = []
        for i, table in enumerate(tables):
            columns = list(table.columns)
            names = ", ".join(f'"{c.name}"' for c in columns)
            values = ", ".join(_value(c) for c in columns)
            rows = f'jsonb_populate_recordset(NULL::"{table.name}", CAST(:r{i} AS jsonb))'
            rows += " WITH ORDINALITY AS r"
            parts.append(
                f'new_{i} AS (INSERT INTO "{table.name}" ({names}) SELECT {values} FROM {rows}'
                " WHERE (SELECT f.ids[r.ordinality] FROM found AS f) IS NULL)"
            )
            binds.append(bindparam(f"r{i}", type_=Text()))
        wake = "pg_notify(:notify_channel, '')" if notify else "NULL"
        stmt = text("WITH " + ", ".join(parts) + f" SELECT ids, {wake} FROM found").bindparams(*binds)
        _BATCHES[key] = stmt
    return stmt


async def insert_batch(
    run: Statements,
    posts: list[tuple[list[tuple[Table, dict[str, Any]]], tuple[str | None, str | None]]],
    *,
    notify: str | None = None,
) -> list[Any]:
    """`insert_unless_open_lead` for several posts in one statement, its own transaction: each
    post's rows (the same tables in the same order for every post, its new lead first) and its
    (email, phone). Answers, a post each in order, the id of the open lead that stopped its insert,
    or None where its rows went in. No two posts may share an email or a phone of one
    organisation (`lock_keys`): a post's look-up cannot see what the same statement inserts."""
    tables = tuple(table for table, _ in posts[0][0])
    orgs = [rows[0][1]["org_id"] for rows, _ in posts]
    params: dict[str, Any] = {
        f"r{i}": row_json([rows[i][1] for rows, _ in posts]) for i in range(len(tables))
    }
    params.update(
        orgs=orgs,
        emails=[email for _, (email, _) in posts],
        phones=[phone for _, (_, phone) in posts],
        keys=sorted({k for org, (_, key) in zip(orgs, posts, strict=True) for k in lock_keys(org, *key)}),
    )
    if notify:
        params["notify_channel"] = notify
    found = await run.fetchval(_batch_statement(tables, bool(notify)), params)
    return list(found)


# --- One row changed in place, guarded by its xmin ----------------------------------------------


def _read_statement(table: Table, condition: str) -> TextClause:
    names = ", ".join(f'"{table.name}"."{c.name}"' for c in table.columns)
    return text(
        f'SELECT "{table.name}".xmin, {names} FROM "{table.name}"'
        f' WHERE "{table.name}".org_id = :org AND "{table.name}".id = :id AND {condition}'
    )


_READ: dict[tuple[str, str], TextClause] = {}


async def read_row(
    run: Statements, model: type[M], org_id: Any, row_id: Any, *, condition: str = "true"
) -> tuple[M, int] | None:
    """A row of `model` (with its id, in its organisation, meeting the SQL `condition`) as a
    detached object, and its `xmin`: the version `update_together` writes over only if nobody
    changed the row in between. None when there is no such row."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    stmt = _READ.get((table.name, condition))
    if stmt is None:
        stmt = _READ[(table.name, condition)] = _read_statement(table, condition)
    rows = await run.fetch(stmt, {"org": org_id, "id": row_id})
    if not rows:
        return None
    xmin, *values = rows[0]
    return build(model, **{c.key: v for c, v in zip(table.columns, values, strict=True)}), int(xmin)


_GUARDED: dict[tuple[str, tuple[str, ...], tuple[str, ...]], TextClause] = {}


def _guarded_statement(table: Table, columns: tuple[str, ...], tables: tuple[Table, ...]) -> TextClause:
    """`WITH changed AS (UPDATE … WHERE … AND xmin = …), new_0 AS (INSERT … WHERE EXISTS changed)
    SELECT count(*) FROM changed`, built once per shape."""
    key = (table.name, columns, tuple(t.name for t in tables))
    stmt = _GUARDED.get(key)
    if stmt is None:
        by_name = {c.name: c for c in table.columns}
        names = ", ".join(f'"{name}"' for name in columns)
        values = ", ".join(_set_value(by_name[name]) for name in columns)
        row = f'jsonb_populate_record(NULL::"{table.name}", CAST(:changed AS jsonb))'
        parts = [
            f'changed AS (UPDATE "{table.name}" AS t SET ({names}) = (SELECT {values} FROM {row} AS r)'
            " WHERE t.org_id = :org AND t.id = :id AND t.xmin = CAST(CAST(:xmin AS text) AS xid)"
            " RETURNING t.id)"
        ]
        binds = [bindparam("changed", type_=Text())]
        for i, other in enumerate(tables):
            other_columns = list(other.columns)
            other_names = ", ".join(f'"{c.name}"' for c in other_columns)
            other_values = ", ".join(_value(c) for c in other_columns)
            source = f'jsonb_populate_record(NULL::"{other.name}", CAST(:r{i} AS jsonb))'
            parts.append(
                f'new_{i} AS (INSERT INTO "{other.name}" ({other_names}) SELECT {other_values}'
                f" FROM {source} AS r WHERE EXISTS (SELECT FROM changed))"
            )
            binds.append(bindparam(f"r{i}", type_=Text()))
        stmt = text("WITH " + ", ".join(parts) + " SELECT count(*) FROM changed").bindparams(*binds)
        _GUARDED[key] = stmt
    return stmt


async def update_together(
    run: Statements,
    obj: Any,
    xmin: int,
    columns: tuple[str, ...],
    rows: list[tuple[Table, dict[str, Any]]],
) -> bool:
    """Write `columns` of `obj` (read by `read_row`) over its row and INSERT `rows`, in one
    statement, only if the row is still the version `xmin` names: False (nothing written) when
    another transaction changed it since, and the caller starts again under locks."""
    table: Table = obj.__table__
    changed = {name: getattr(obj, table.columns[name].key) for name in columns}
    params: dict[str, Any] = {f"r{i}": row_json(values) for i, (_, values) in enumerate(rows)}
    params.update(changed=row_json(changed), org=obj.org_id, id=obj.id, xmin=str(xmin))
    stmt = _guarded_statement(table, columns, tuple(t for t, _ in rows))
    return bool(await run.fetchval(stmt, params))
