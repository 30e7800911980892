"""HTTP only: parse, authorise, call one service, shape the response. No SQL here."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from app.errors import problem_responses

# Declared on every authenticated router; routes add their own (404, 409, 412 …).
COMMON_ERRORS = problem_responses(400, 401, 403, 413, 415, 422, 429)


def set_etag(response: Response, obj: Any) -> None:
    """ETag of a single resource: its version."""
    response.headers["ETag"] = f'"{obj.version}"'


def wants_csv(format: str | None, accept: str | None) -> bool:
    """`format=csv`, or `Accept: text/csv`, asks for CSV."""
    return format == "csv" or (format is None and bool(accept) and "text/csv" in (accept or ""))


def csv_response(rows: list[list[str]], filename: str) -> Response:
    """Rows as a CSV download (RFC 4180, UTF-8)."""
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return Response(
        content=buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or CSV with format=csv",
    }
}
