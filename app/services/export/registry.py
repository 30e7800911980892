"""What the export publishes: one entry per entity, with its columns, source rows and visibility.

An entity is a stamped table (see app.models.export) read as it is, less the columns named in
`exclude`, with optional extra conditions (tasks are the activities of kind `task`) and the
caller's visibility (the list endpoints' own SQL conditions). Quote lines are the elements of
`quotes.lines`, one row each. Adding an entity is one `table_entity(...)` entry in ENTITIES.

Every entity ends with the same three columns: `deleted_at` and `reason` (set on tombstones
only) and `export_cursor` (the row's position; pass it as `cursor` to resume after the row).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    FromClause,
    Integer,
    Numeric,
    String,
    Table,
    Uuid,
    and_,
    cast,
    exists,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel, col

from app.models.account import Account, Contact
from app.models.common import Role
from app.models.deal import Deal, DealFieldHistory, DealStageHistory
from app.models.lead import Activity, ActivityKind, Lead
from app.models.payment import Payment, PaymentAllocation
from app.models.quote import Quote
from app.models.receivable import Installment, Order
from app.models.user import Team, User
from app.security import Principal
from app.services.deals.service import visibility_clause as deal_visibility
from app.services.leads.service import visible as lead_visibility
from app.services.receivables.access import account_clause, order_clause


class Kind(enum.StrEnum):
    """A column's type as the export publishes it (Parquet type in brackets).

    uuid and string [string]; integer [int64]; boolean [bool]; decimal: an exact decimal string in
    JSON and CSV [decimal128(precision, scale)]; timestamp: RFC 3339 with offset, UTC, microseconds
    [timestamp(us, UTC)]; date: YYYY-MM-DD [date32]; json: nested JSON in JSON formats, JSON text in
    CSV and Parquet [string].
    """

    uuid = "uuid"
    string = "string"
    integer = "integer"
    boolean = "boolean"
    decimal = "decimal"
    timestamp = "timestamp"
    date = "date"
    json = "json"


@dataclass(frozen=True)
class ExportColumn:
    """One published column and the SQL expression it is read from."""

    name: str
    kind: Kind
    expression: ColumnElement[Any]
    precision: int | None = None
    scale: int | None = None


Visibility = Callable[[Principal], ColumnElement[bool] | None]


@dataclass(frozen=True)
class Entity:
    """An exported entity: where its rows come from and who sees which."""

    name: str
    description: str
    source: FromClause
    stamps: tuple[ColumnElement[int], ...]  # (change_xid, change_seq[, position within the row])
    org_id: ColumnElement[object]
    columns: tuple[ExportColumn, ...]
    updated: ColumnElement[object]
    visibility: Visibility
    conditions: tuple[ColumnElement[bool], ...] = ()
    soft_deleted: ColumnElement[object] | None = None  # set on a soft-deleted row: a tombstone
    primary_key: tuple[str, ...] = field(default=("id",))


TOMBSTONE_COLUMNS = ("id", "deleted_at", "updated_at", "reason", "export_cursor")
# The columns every entity ends with (their expressions come from the page's query).
TRAILING_COLUMNS = (
    ExportColumn("deleted_at", Kind.timestamp, null()),
    ExportColumn("reason", Kind.string, null()),
    ExportColumn("export_cursor", Kind.string, null()),
)


def arrow_type(column: ExportColumn) -> Any:
    """The Parquet (Arrow) type of a published column (pyarrow is loaded on first use)."""
    import pyarrow as pa

    if column.kind == Kind.decimal:
        return pa.decimal128(column.precision or 18, column.scale or 4)
    return {
        Kind.integer: pa.int64(),
        Kind.boolean: pa.bool_(),
        Kind.timestamp: pa.timestamp("us", tz="UTC"),
        Kind.date: pa.date32(),
    }.get(column.kind, pa.string())


def kind_of(column: object) -> tuple[Kind, int | None, int | None]:
    """The published kind of a table column's SQL type."""
    sql_type = getattr(column, "type", column)
    if isinstance(sql_type, TypeDecorator):  # sqlmodel's AutoString and the like
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, Uuid):
        return Kind.uuid, None, None
    if isinstance(sql_type, JSONB):
        return Kind.json, None, None
    if isinstance(sql_type, Boolean):
        return Kind.boolean, None, None
    if isinstance(sql_type, Integer | BigInteger):
        return Kind.integer, None, None
    if isinstance(sql_type, Numeric):
        return Kind.decimal, sql_type.precision or 18, sql_type.scale or 4
    if isinstance(sql_type, DateTime):
        return Kind.timestamp, None, None
    if isinstance(sql_type, Date):
        return Kind.date, None, None
    if isinstance(sql_type, String):
        return Kind.string, None, None
    raise TypeError(f"no export kind for {sql_type!r}")


def stamps_of(table: Table) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """The table's database-maintained change stamps (not declared on the model)."""
    return (
        literal_column(f"{table.name}.change_xid", BigInteger),
        literal_column(f"{table.name}.change_seq", BigInteger),
    )


ALWAYS_EXCLUDED = frozenset({"org_id"})


def table_entity(
    name: str,
    model: type[SQLModel],
    description: str,
    *,
    visibility: Visibility,
    exclude: Sequence[str] = (),
    conditions: Sequence[ColumnElement[bool]] = (),
    updated: str = "updated_at",
    soft_deleted: str | None = None,
) -> Entity:
    """An entity that is one table's rows and columns (less `exclude`)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    skip = ALWAYS_EXCLUDED | set(exclude) | ({soft_deleted} if soft_deleted else set())
    columns = []
    for column in sorted(table.columns, key=lambda c: c.name != "id"):  # id first, then table order
        if column.name in skip:
            continue
        kind, precision, scale = kind_of(column)
        columns.append(ExportColumn(column.name, kind, column, precision, scale))
    if "updated_at" not in table.c:  # append-only histories: the row's time is its last change
        columns.append(ExportColumn("updated_at", Kind.timestamp, table.c[updated]))
    return Entity(
        name=name,
        description=description,
        source=table,
        stamps=stamps_of(table),
        org_id=table.c.org_id,
        columns=tuple(columns),
        updated=table.c[updated],
        visibility=visibility,
        conditions=tuple(conditions),
        soft_deleted=table.c[soft_deleted] if soft_deleted else None,
    )


# --- visibility: the list endpoints' conditions ---------------------------------------------------


def _sees_everything(principal: Principal) -> bool:
    return principal.role in (Role.admin, Role.viewer)


def everyone(principal: Principal) -> ColumnElement[bool] | None:
    """Shared records (accounts, contacts, users, teams): every member reads them."""
    return None


def leads_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Leads as GET /v1/leads shows them; deleted ones are tombstones, which everyone gets."""
    if _sees_everything(principal):
        return None
    return or_(lead_visibility(principal), col(Lead.deleted_at).is_not(None))


def deals_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Deals as GET /v1/deals shows them."""
    return None if _sees_everything(principal) else deal_visibility(principal)


def through_deal(deal_id: Any) -> Visibility:
    """Rows that follow their deal's visibility (histories, quotes, orders)."""

    def visible(principal: Principal) -> ColumnElement[bool] | None:
        if _sees_everything(principal):
            return None
        return exists(select(literal(1)).where(col(Deal.id) == deal_id, deal_visibility(principal)))

    return visible


def _sees_every_receivable(principal: Principal) -> bool:
    return _sees_everything(principal) or principal.is_finance


def orders_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Orders as GET /v1/orders shows them (the rule of app.services.receivables.access)."""
    return None if _sees_every_receivable(principal) else order_clause(principal)


def installments_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Installments as GET /v1/installments shows them: those of the orders the caller sees."""
    if _sees_every_receivable(principal):
        return None
    return exists(
        select(literal(1))
        .select_from(Order)
        .where(
            col(Order.org_id) == col(Installment.org_id),
            col(Order.id) == col(Installment.order_id),
            order_clause(principal),
        )
    )


def payments_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Payments as GET /v1/payments shows them: those of accounts whose receivables the caller sees."""
    return None if _sees_every_receivable(principal) else account_clause(principal, col(Payment.account_id))


def allocations_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Allocations are shown with their payment (GET /v1/payments/{id}), so they follow it."""
    if _sees_every_receivable(principal):
        return None
    return exists(
        select(literal(1))
        .select_from(Payment)
        .where(
            col(Payment.org_id) == col(PaymentAllocation.org_id),
            col(Payment.id) == col(PaymentAllocation.payment_id),
            account_clause(principal, col(Payment.account_id)),
        )
    )


def activities_visible(principal: Principal) -> ColumnElement[bool] | None:
    """An activity is seen with its lead, else with its deal."""
    if _sees_everything(principal):
        return None
    on_lead = and_(
        col(Activity.lead_id).is_not(None),
        exists(select(literal(1)).where(col(Lead.id) == col(Activity.lead_id), lead_visibility(principal))),
    )
    on_deal = and_(
        col(Activity.lead_id).is_(None),
        exists(select(literal(1)).where(col(Deal.id) == col(Activity.deal_id), deal_visibility(principal))),
    )
    return or_(on_lead, on_deal)


def tasks_visible(principal: Principal) -> ColumnElement[bool] | None:
    """Tasks as GET /v1/tasks: a rep's own; everyone else's for the other roles."""
    if principal.role == Role.rep:
        return col(Activity.owner_id) == principal.user_id
    return None


# A soft-deleted lead's timeline is gone from the API (its tasks are not), so from the export too.
NOT_ON_DELETED_LEAD = or_(
    col(Activity.lead_id).is_(None),
    not_(
        exists(
            select(literal(1)).where(col(Lead.id) == col(Activity.lead_id), col(Lead.deleted_at).is_not(None))
        )
    ),
)


# --- quote lines: the elements of quotes.lines ------------------------------------------------------

_quote_table: Table = Quote.__table__  # type: ignore[attr-defined]
_lines_lateral = (
    func.jsonb_array_elements(_quote_table.c.lines)
    .table_valued("value", with_ordinality="position", name="l")
    .render_derived(with_types=False)
    .lateral("l")
)
QUOTE_LINES_SOURCE = _quote_table.join(_lines_lateral, true())


def _line(key: str) -> ColumnElement[str]:
    return _lines_lateral.c.value.op("->>")(key)


def _line_decimal(name: str, precision: int, scale: int) -> ExportColumn:
    return ExportColumn(name, Kind.decimal, cast(_line(name), Numeric(precision, scale)), precision, scale)


QUOTE_LINES = Entity(
    name="quote_lines",
    description="One row per line of a quote revision (computed server-side, rounded per line); "
    "id is derived from the quote's id and the line's position.",
    source=QUOTE_LINES_SOURCE,
    stamps=(*stamps_of(_quote_table), _lines_lateral.c.position),
    org_id=_quote_table.c.org_id,
    columns=(
        ExportColumn(
            "id", Kind.uuid, func.loudou_quote_line_id(_quote_table.c.id, _lines_lateral.c.position)
        ),
        ExportColumn("quote_id", Kind.uuid, _quote_table.c.id),
        ExportColumn("deal_id", Kind.uuid, _quote_table.c.deal_id),
        ExportColumn("position", Kind.integer, _lines_lateral.c.position),
        ExportColumn("product_id", Kind.uuid, cast(_line("product_id"), Uuid)),
        ExportColumn("sku", Kind.string, _line("sku")),
        ExportColumn("description", Kind.string, _line("description")),
        _line_decimal("quantity", 18, 4),
        _line_decimal("unit_price", 18, 4),
        _line_decimal("discount_percent", 7, 4),
        _line_decimal("discount_amount", 18, 4),
        _line_decimal("quote_discount_amount", 18, 4),
        _line_decimal("tax_rate", 7, 4),
        _line_decimal("gross", 18, 4),
        _line_decimal("net", 18, 4),
        _line_decimal("tax", 18, 4),
        _line_decimal("total", 18, 4),
        ExportColumn("currency", Kind.string, _quote_table.c.currency),
        ExportColumn("created_at", Kind.timestamp, _quote_table.c.created_at),
        ExportColumn("updated_at", Kind.timestamp, _quote_table.c.updated_at),
    ),
    updated=_quote_table.c.updated_at,
    visibility=through_deal(col(Quote.deal_id)),
    primary_key=("id",),
)


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        table_entity(
            "leads",
            Lead,
            "Leads as GET /v1/leads shows them: erased ones with their personal fields emptied, merged "
            "ones with duplicate_of; soft-deleted ones as tombstones.",
            visibility=leads_visible,
            soft_deleted="deleted_at",
        ),
        table_entity(
            "activities",
            Activity,
            "Timeline entries (calls, emails, meetings, notes) of leads and deals; tasks are an entity "
            "of their own.",
            visibility=activities_visible,
            conditions=[col(Activity.kind) != ActivityKind.task.value, NOT_ON_DELETED_LEAD],
        ),
        table_entity(
            "tasks",
            Activity,
            "Follow-up tasks (activities of kind task) with due_at and done_at.",
            visibility=tasks_visible,
            conditions=[col(Activity.kind) == ActivityKind.task.value],
        ),
        table_entity("deals", Deal, "Deals as GET /v1/deals shows them.", visibility=deals_visible),
        table_entity(
            "deal_stage_history",
            DealStageHistory,
            "Every stage change of a deal (append-only; from_stage_id null for creation); updated_at = at.",
            visibility=through_deal(col(DealStageHistory.deal_id)),
            updated="at",
        ),
        table_entity(
            "deal_field_history",
            DealFieldHistory,
            "Every change of a tracked deal field with old and new values (JSON); updated_at = at.",
            visibility=through_deal(col(DealFieldHistory.deal_id)),
            updated="at",
        ),
        table_entity(
            "quotes",
            Quote,
            "Quote revisions with their totals; the lines are the quote_lines entity.",
            visibility=through_deal(col(Quote.deal_id)),
            exclude=["lines"],
        ),
        QUOTE_LINES,
        table_entity(
            "orders",
            Order,
            "Orders, made from accepted quotes or entered directly for an account (no deal, no quote).",
            visibility=orders_visible,
        ),
        table_entity(
            "installments",
            Installment,
            "Payment plans (回款计划) of orders: amount, paid, written off, status.",
            visibility=installments_visible,
        ),
        table_entity(
            "payments",
            Payment,
            "Payments received (回款) with their status: pending_confirmation, confirmed, rejected, "
            "reversed (reversed_on, reversal_reason). Only confirmed payments count toward balances.",
            visibility=payments_visible,
        ),
        table_entity(
            "payment_allocations",
            PaymentAllocation,
            "Parts of payments applied to installments (核销): amount in the payment's currency, "
            "applied_amount in the installment's; written once, they count only while their payment "
            "is confirmed (a reversal changes the payment's status, not its allocations); "
            "updated_at = created_at.",
            visibility=allocations_visible,
            updated="created_at",
        ),
        table_entity("accounts", Account, "Customer companies.", visibility=everyone),
        table_entity("contacts", Contact, "People at accounts.", visibility=everyone),
        table_entity(
            "users", User, "Members of the organisation.", visibility=everyone, exclude=["password_hash"]
        ),
        table_entity("teams", Team, "Sales teams.", visibility=everyone),
    )
}
