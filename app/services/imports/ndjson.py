"""NDJSON history imports: lines read from the request stream one at a time (constant memory),
each validated and written in its own savepoint, so a bad line is reported with its number and
reason while the good ones land. Idempotent by `external_id`: an unchanged line (same SHA-256)
changes nothing; a changed one updates what it made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import FieldError, Forbidden, ValidationFailed
from app.models.common import Role
from app.security import Principal

MAX_LINE_BYTES = 1024 * 1024
MAX_REPORTED_ERRORS = 1000


class LineError(BaseModel):
    """A line that was not imported: its number (1 = the first line), why, and the fields at fault."""

    line: int
    external_id: str | None = None
    reason: str
    errors: list[FieldError]


class ImportReport(BaseModel):
    """What an import did (with dry_run: would do)."""

    dry_run: bool
    lines: int
    created: int
    updated: int
    unchanged: int
    failed: int
    errors: list[LineError]


class LineRejected(Exception):
    """A line that fails validation: reason and field errors."""

    def __init__(self, reason: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = errors or []


def reject(field: str, code: str, message: str) -> LineRejected:
    """A line error naming one field."""
    return LineRejected(f"{field}: {message}", [FieldError(field=field, code=code, message=message)])


def check_not_future(field: str, value: datetime | None, now: datetime) -> None:
    """Imported history cannot happen after the import."""
    if value is not None and value > now:
        raise reject(field, "future_date", f"{value.isoformat()} is in the future")


def checksum(raw: bytes) -> str:
    """The SHA-256 of a line's JSON, canonical (key order and spacing do not matter)."""
    canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def lines(stream: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line; None for a line longer than MAX_LINE_BYTES (skipped whole)."""
    buffer = b""
    number = 0
    too_long = False
    async for chunk in stream:
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_LINE_BYTES:
                    buffer, too_long = b"", True
                break
            line, buffer = buffer[:end], buffer[end + 1 :]
            number += 1
            yield number, (None if too_long else line)
            too_long = False
    if buffer.strip() or too_long:
        number += 1
        yield number, (None if too_long else buffer)


Outcome = str  # "created" | "updated" | "unchanged"
Handler = Callable[[int, dict[str, Any], str], Awaitable[Outcome]]


async def run_import(
    session: AsyncSession,
    principal: Principal,
    stream: AsyncIterator[bytes],
    *,
    dry_run: bool,
    handle: Handler,
) -> ImportReport:
    """Feed every non-blank line to `handle(line number, object, checksum)` in its own savepoint."""
    if principal.role != Role.admin:
        raise Forbidden("Only admins import history.")
    report = ImportReport(dry_run=dry_run, lines=0, created=0, updated=0, unchanged=0, failed=0, errors=[])

    def fail(number: int, reason: str, errors: list[FieldError], external_id: Any = None) -> None:
        report.failed += 1
        if len(report.errors) < MAX_REPORTED_ERRORS:
            ext = str(external_id) if isinstance(external_id, str | int) else None
            report.errors.append(LineError(line=number, external_id=ext, reason=reason, errors=errors))

    received = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in stream:
            received += len(chunk)
            yield chunk

    async for number, raw in lines(counted()):
        if raw is not None and not raw.strip():
            continue
        report.lines += 1
        if raw is None:
            fail(number, f"the line is longer than {MAX_LINE_BYTES} bytes", [])
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            fail(
                number, f"not JSON: {exc}", [FieldError(field="line", code="invalid_json", message=str(exc))]
            )
            continue
        if not isinstance(obj, dict):
            fail(
                number,
                "a line is one JSON object",
                [FieldError(field="line", code="not_object", message="object")],
            )
            continue
        try:
            async with session.begin_nested():
                outcome = await handle(number, obj, checksum(raw))
                await session.flush()
        except ValidationError as exc:
            errors = [
                FieldError(
                    field=".".join(str(p) for p in e.get("loc", ())) or "line",
                    code=str(e.get("type", "invalid")),
                    message=str(e.get("msg", "invalid")),
                )
                for e in exc.errors()
            ]
            fail(number, "; ".join(f"{e.field}: {e.message}" for e in errors), errors, obj.get("external_id"))
            continue
        except LineRejected as exc:
            fail(number, exc.reason, exc.errors, obj.get("external_id"))
            continue
        except ValidationFailed as exc:
            fail(number, exc.detail or "invalid", exc.errors or [], obj.get("external_id"))
            continue
        except DBAPIError as exc:
            reason = str(getattr(exc, "orig", exc)).split("\n")[0][:300]
            fail(number, f"cannot be stored: {reason}", [], obj.get("external_id"))
            continue
        finally:
            session.expunge_all()
        if outcome == "created":
            report.created += 1
        elif outcome == "updated":
            report.updated += 1
        else:
            report.unchanged += 1
    if received == 0:
        raise ValidationFailed.on("body", "empty", "send one JSON object a line")
    return report
