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
