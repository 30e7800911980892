"""Change stamps and tombstones behind the incremental export (DESIGN §7).

Every exported table carries two database-maintained columns: `change_xid`, the 64-bit id of the
transaction that last wrote the row (`pg_current_xact_id()`), and `change_seq`, a value of the
shared sequence `export_change_seq` drawn by the same write, with an (org_id, change_xid,
change_seq) index. Column defaults set them on INSERT and the `loudou_export_restamp` trigger on
UPDATE; the application never writes them, so they are not declared on the models (code that
builds INSERTs from a table's columns must not see them) and the export reads them by name.
Rows deleted from an exported table leave a tombstone in `deleted_rows`, written by an AFTER
DELETE trigger in the deleting transaction.

The export orders rows by (change_xid, change_seq) and reads only rows whose writer is below its
snapshot's horizon (`loudou_export_horizon()`: xmin, less transactions of other databases): every
transaction of this database below it has ended, and no new transaction can get an id below it,
so once a position has been handed out nothing can later appear before it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field, SQLModel

from app.models.base import TenantMixin, TimestampField, new_id

CHANGE_SEQUENCE = "export_change_seq"
CHANGE_XID_DEFAULT = "(pg_current_xact_id())::text::bigint"
CHANGE_SEQ_DEFAULT = f"nextval('{CHANGE_SEQUENCE}'::regclass)"

# The tables whose rows the export reads (quote lines live in quotes.lines; tasks in activities).
STAMPED_TABLES = (
    "leads",
    "activities",
    "deals",
    "deal_stage_history",
    "deal_field_history",
    "quotes",
    "orders",
    "installments",
    "payments",
    "payment_allocations",
    "accounts",
    "contacts",
    "users",
    "teams",
)


# Maintained by the database on the stamped tables, not declared on their models (see above).
DATABASE_MAINTAINED_COLUMNS = frozenset({"change_xid", "change_seq"})


def change_index_name(table: str) -> str:
    """The (org_id, change_xid, change_seq) index every stamped table has."""
    return f"ix_{table}_org_id_change_xid_change_seq"


class DeletedRow(TenantMixin, table=True):
    """A tombstone: a row of an exported entity that was deleted, stamped like a change."""

    __tablename__ = "deleted_rows"
    __table_args__ = (
        Index(
            "ix_deleted_rows_org_id_entity_change_xid_change_seq",
            "org_id",
            "entity",
            "change_xid",
            "change_seq",
        ),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)  # the key is (org_id, id)
    entity: str = Field(max_length=64)
    row_id: uuid.UUID
    deleted_at: datetime = TimestampField()
    reason: str = Field(max_length=32)
    change_xid: int = Field(
        default=None, sa_type=BigInteger, sa_column_kwargs={"server_default": text(CHANGE_XID_DEFAULT)}
    )
    change_seq: int = Field(
        default=None, sa_type=BigInteger, sa_column_kwargs={"server_default": text(CHANGE_SEQ_DEFAULT)}
    )


class ExportColumnInfo(SQLModel):
    """A published column: name, type (uuid, string, integer, boolean, decimal, timestamp, date,
    json), decimal precision and scale, and its Parquet type."""

    name: str
    type: str
    precision: int | None = None
    scale: int | None = None
    parquet_type: str


class ExportEntityInfo(SQLModel):
    """An exported entity and its columns, in the order every format writes them."""

    name: str
    description: str
    primary_key: list[str]
    columns: list[ExportColumnInfo]


class ExportChangeTracking(SQLModel):
    """How rows are ordered so that none is skipped, and the time window (none: 0)."""

    method: str
    lag_seconds: int
    order: str
    description: str


class ExportCatalog(SQLModel):
    """GET /v1/export: what can be exported and how paging works."""

    definition_version: int
    cursor_header: str
    has_more_header: str
    formats: list[str]
    limit_default: int
    limit_max: int
    scope: str
    change_tracking: ExportChangeTracking
    tombstone_columns: list[str]
    entities: list[ExportEntityInfo]


class ExportPage(SQLModel):
    """One page in `format=json`: rows (or tombstones), the cursor to resume from, and whether more
    rows follow (an empty page means caught up)."""

    data: list[dict[str, Any]]
    next_cursor: str
    has_more: bool
