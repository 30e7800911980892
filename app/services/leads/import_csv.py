"""CSV import of leads: a column mapping, per-row errors, the same dedupe as every other way in.

The file is read row by row from the upload's spooled temporary file (never loaded whole);
`dry_run` reports what would happen (new or merged) without writing anything. A file of more
than the row cap is refused before anything is written; a real import is committed every
BATCH_ROWS rows, so its dedupe locks never pile up in one transaction (PostgreSQL's lock table is
shared by every tenant). A failure mid-file keeps the batches before it; importing the same file
again merges those rows instead of duplicating them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, Forbidden, PayloadTooLarge, ValidationFailed
from app.models.common import Role
from app.models.intake import LEAD_FIELDS
from app.models.lead import FieldNote, LeadSource, phone_note
from app.models.organisation import Organisation
from app.security import Principal
from app.services.leads.ingest import find_exact, ingest
from app.services.leads.normalise import map_payload, normalise

MAX_REPORTED_ERRORS = 1000
BATCH_ROWS = 200  # two advisory locks a row: at most 400 per transaction


class RowError(BaseModel):
    """One row that could not be imported (row 1 is the first data row after the header)."""

    row: int
    errors: list[FieldError]


class RowNote(BaseModel):
    """A row imported with a field not stored as sent (e.g. a phone kept in phone_raw)."""

    row: int
    notes: list[FieldNote]


class LeadImportReport(BaseModel):
    """What an import did (or, with dry_run, would do)."""

    dry_run: bool
    rows: int
    created: int
    merged: int
    failed: int
    lead_ids: list[str]
    errors: list[RowError]
    notes: list[RowNote] = []


def parse_mapping(raw: str | None) -> dict[str, str]:
    """`{"CSV column": "lead field"}`; lead fields as in intake mappings."""
    import json

    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            "mapping is not JSON.",
            errors=[FieldError(field="mapping", code="invalid_json", message=str(exc))],
        ) from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValidationFailed(
            "mapping must be an object of column -> lead field.",
            errors=[FieldError(field="mapping", code="invalid", message="expected {column: field}")],
        )
    bad = [v for v in mapping.values() if v not in LEAD_FIELDS and not v.startswith("attributes.")]
    if bad:
        raise ValidationFailed(
            f"Unknown lead field(s): {', '.join(bad)}.",
            errors=[FieldError(field="mapping", code="invalid_field", message=", ".join(LEAD_FIELDS))],
        )
    return mapping


def rows(binary: IO[bytes]) -> Iterator[dict[str, Any]]:
    """Rows of a UTF-8 (BOM tolerated) CSV file as dicts keyed by the header, streamed."""
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
    try:
        yield from csv.DictReader(text)
    finally:
        text.detach()


def authorise(principal: Principal) -> None:
    """Only admins and managers import (checked before the upload is even read)."""
    if principal.role not in (Role.admin, Role.manager):
        raise Forbidden("Only admins and managers import leads.")


def _check_row_count(binary: IO[bytes], max_rows: int) -> None:
    """413 when the file has more than max_rows data rows (one streamed pass, then rewound)."""
    try:
        for number, _ in enumerate(rows(binary), start=1):
            if number > max_rows:
                raise PayloadTooLarge(
                    f"The file has more than {max_rows} rows; split it.",
                    errors=[FieldError(field="file", code="too_many_rows", message=f"max {max_rows}")],
                )
    except csv.Error as exc:
        raise ValidationFailed(
            f"The CSV cannot be read: {exc}.",
            errors=[FieldError(field="file", code="invalid_csv", message=str(exc))],
        ) from exc
    finally:
        binary.seek(0)


async def import_csv(
    session: AsyncSession,
    principal: Principal,
    binary: IO[bytes],
    *,
    mapping: dict[str, str],
    dry_run: bool,
    default_country: str | None,
    max_rows: int,
    commit: Callable[[], Awaitable[None]] | None = None,
) -> LeadImportReport:
    """Import (or dry-run) every row; invalid rows are reported and skipped, valid ones deduped.

    `commit` (the edge's) is called after every BATCH_ROWS written rows."""
    authorise(principal)
    _check_row_count(binary, max_rows)
    org = await session.get(Organisation, principal.org_id)
    assert org is not None
    settings = org.typed_settings()
    regions = [default_country, settings.default_phone_country]
    report = LeadImportReport(dry_run=dry_run, rows=0, created=0, merged=0, failed=0, lead_ids=[], errors=[])
    org_id = org.id
    pending = 0
    try:
        for number, row in enumerate(rows(binary), start=1):
            report.rows += 1
            payload = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            data, _ = map_payload(payload, mapping=mapping, source=LeadSource.import_)
            data.source_detail["import_row"] = number
            errors = normalise(data, default_regions=regions)
            if errors:
                report.failed += 1
                if len(report.errors) < MAX_REPORTED_ERRORS:
                    report.errors.append(RowError(row=number, errors=errors))
                continue
            note = phone_note(data.phone, data.phone_raw)
            if note is not None and len(report.notes) < MAX_REPORTED_ERRORS:
                report.notes.append(RowNote(row=number, notes=[note]))
            if dry_run:
                existing = await find_exact(session, email=data.email, phone=data.phone)
                if existing is None:
                    report.created += 1
                else:
                    report.merged += 1
                continue
            with session.no_autoflush:  # audit rows go in once per batch, not one round trip a row
                done = await ingest(
                    session, data, org_id=org_id, settings=settings, actor=principal, insert_first=True
                )
            report.created += int(done.created)
            report.merged += int(not done.created)
            if len(report.lead_ids) < MAX_REPORTED_ERRORS:
                report.lead_ids.append(str(done.lead.id))
            pending += 1
            if commit is not None and pending >= BATCH_ROWS:
                await session.flush()
                await commit()
                session.expunge_all()  # the batch's leads are written; keep memory flat
                pending = 0
    except csv.Error as exc:
        raise ValidationFailed(
            f"The CSV cannot be read at row {report.rows}: {exc}.",
            errors=[FieldError(field="file", code="invalid_csv", message=str(exc))],
        ) from exc
    return report
