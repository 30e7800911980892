"""One error tree, rendered as RFC 9457 problem+json for every error the API answers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"
STANDARD_MEMBERS = frozenset(
    {"type", "title", "status", "detail", "instance", "code", "request_id", "errors"}
)
PROBLEM_BASE = "https://loudou.dev/problems/"

log = logging.getLogger("loudou.errors")


class FieldError(BaseModel):
    """One field that failed validation."""

    field: str
    code: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable `code`, the request id and field errors (422)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    """Base of every domain error: the class says the status, title and code."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class DuplicateExists(Conflict):
    """The same email or phone belongs to an open lead the caller may not see: nothing about it is said."""

    code, title = "duplicate_exists", "A duplicate exists"


class InvalidTransition(Conflict):
    code, title = "invalid_transition", "Transition not allowed"


class PreconditionFailed(AppError):
    status, code, title = 412, "stale_version", "The resource has changed"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported content type"


class UnstorableValue(AppError):
    """A value PostgreSQL cannot store (SQLSTATE class 22: a NUL byte, a number too large)."""

    status, code, title = 422, "unstorable_value", "Validation failed"


def unstorable(exc: BaseException) -> UnstorableValue | None:
    """A database error over a value PostgreSQL cannot store (SQLSTATE class 22, "data
    exception": a NUL byte in text, \\u0000 in JSON, a number too large for its column), as the
    client's 422; None for any other error. Takes SQLAlchemy's wrapper or the driver's error."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if not str(getattr(cause, "sqlstate", "") or "").startswith("22"):
        return None
    return UnstorableValue(f"A value cannot be stored: {str(cause).split(':', 1)[-1].strip()[:200]}")


class DatabaseUnavailable(AppError):
    """PostgreSQL cannot be reached (down, restarting, the connection dropped): retry shortly."""

    status, code, title = 503, "database_unavailable", "Service unavailable"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "2"})
        super().__init__(detail or "The database cannot be reached right now; retry shortly.", **kwargs)


# SQLSTATE class 08 (connection exception); 57P01-57P03: admin/crash shutdown, cannot connect now.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database is out of reach rather than refusing a statement: a
    refused or dropped connection, a server shutting down or starting up, a connect timeout.
    Takes SQLAlchemy's wrapper, the driver's error or the OSError of a failed connect."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, ConnectionError | TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError
        ):
            return True
        state = str(getattr(current, "sqlstate", "") or "")
        if state.startswith("08") or state in UNAVAILABLE_SQLSTATES:
            return True
        nxt = current.orig if isinstance(current, DBAPIError) else None
        current = nxt if isinstance(nxt, BaseException) else current.__cause__
    return False


def unavailable_response() -> JSONResponse:
    """The 503 problem for an unreachable database."""
    error = DatabaseUnavailable()
    log.warning("database unavailable")
    return problem_response(
        error.status, code=error.code, title=error.title, detail=error.detail, headers=error.headers
    )


# lock_not_available (lock_timeout), query_canceled (statement_timeout), deadlock_detected
BUSY_SQLSTATES = frozenset({"55P03", "57014", "40P01"})


def _sqlstate(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return str(getattr(cause, "sqlstate", "") or "")


def statement_timeout(exc: BaseException) -> bool:
    """Whether a database error is a statement cancelled by statement_timeout (SQLSTATE 57014)."""
    return _sqlstate(exc) == "57014"


class ValidationFailed(AppError):
    status, code, title = 422, "validation_error", "Validation failed"

    @classmethod
    def on(cls, field: str, code: str, message: str) -> ValidationFailed:
        """A 422 about one field: `message` is the detail and the field error's message."""
        return cls(message, errors=[FieldError(field=field, code=code, message=message)])


class RateLimited(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


def problem_response(
    status: int,
    *,
    code: str,
    title: str,
    detail: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Render one problem+json response."""
    request_id = correlation_id.get()
    body = Problem(
        type=PROBLEM_BASE + code.replace("_", "-"),
        title=title,
        status=status,
        detail=detail,
        instance=f"urn:request:{request_id}" if request_id else None,
        code=code,
        request_id=request_id,
        errors=list(errors) if errors else None,
    ).model_dump(exclude_none=True)
    # Extension members never overwrite the standard ones (a quote's `status` is not the HTTP status).
    body.update({k: v for k, v in (extra or {}).items() if k not in STANDARD_MEMBERS})
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        out.append(
            FieldError(
                field=".".join(loc) or str(err.get("loc", ("body",))[0]),
                code=str(err.get("type", "invalid")),
                message=str(err.get("msg", "invalid value")),
            )
        )
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, HTTP errors, validation errors and crashes to problem+json."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(
            exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e.code == "json_invalid" for e in errors):
            return problem_response(
                400,
                code="malformed_json",
                title="Malformed JSON",
                detail="The request body is not valid JSON.",
                errors=errors,
            )
        return problem_response(
            422,
            code="validation_error",
            title="Validation failed",
            detail=f"{len(errors)} field(s) are invalid",
            errors=errors,
        )

    @app.exception_handler(PydanticValidationError)
    async def _model_validation(request: Request, exc: PydanticValidationError) -> JSONResponse:
        # A service validating merged data (say settings after a partial update) found it invalid.
        errors = [
            FieldError(
                field=".".join(str(p) for p in err.get("loc", ())) or "body",
                code=str(err.get("type", "invalid")),
                message=str(err.get("msg", "invalid value")),
            )
            for err in exc.errors()
        ]
        return problem_response(
            422,
            code="validation_error",
            title="Validation failed",
            detail=f"{len(errors)} field(s) are invalid",
            errors=errors,
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if statement_timeout(exc):
            return problem_response(
                503,
                code="query_timeout",
                title="Service unavailable",
                detail="The query took longer than the statement timeout; narrow the period or retry.",
                headers={"Retry-After": "5"},
            )
        # A value PostgreSQL cannot store is the client's input; the transaction was rolled
        # back, and the answer is a 422, never a 500.
        error = unstorable(exc)
        if error is not None:
            return problem_response(error.status, code=error.code, title=error.title, detail=error.detail)
        if database_unavailable(exc):
            return unavailable_response()
        if _sqlstate(exc) in BUSY_SQLSTATES:
            # A lock wait or a statement past its server-side timeout: busy, not broken.
            log.warning("database busy: %s", _sqlstate(exc))
            return problem_response(
                503,
                code="database_busy",
                title="Service unavailable",
                detail="The database was too busy to answer in time; retry shortly.",
                headers={"Retry-After": "1"},
            )
        log.exception("database error", exc_info=exc)
        return problem_response(
            500,
            code="internal_error",
            title="Internal server error",
            detail="Something went wrong on our side; the request id identifies it in our logs.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 405:
            headers["Allow"] = allowed_methods(request)
        return problem_response(status, code=code, title=phrase, detail=detail, headers=headers)

    async def _driver(request: Request, exc: Exception) -> JSONResponse:
        # Raised by the driver itself (a refused connect, a connection closed under a raw
        # statement), not wrapped by SQLAlchemy: 503 when the database is out of reach.
        if database_unavailable(exc):
            return unavailable_response()
        error = unstorable(exc)
        if error is not None:
            return problem_response(error.status, code=error.code, title=error.title, detail=error.detail)
        return await _crash(request, exc)

    for driver_error in (ConnectionError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
        app.add_exception_handler(driver_error, _driver)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        """The client left before its body arrived (a load generator stopping, a closed tab):
        nothing whole was received to keep and nobody is left to answer. Logged as 499, nginx's
        "client closed request", not as a crash."""
        log.info("client disconnected before its body arrived (%s)", request.method)
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(
            500,
            code="internal_error",
            title="Internal server error",
            detail="Something went wrong on our side; the request id identifies it in our logs.",
        )


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this request's path (FastAPI makes one route per
    operation, so Starlette's own 405 names only the methods of the first route that matched)."""
    allowed = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.add(method)
    return ", ".join(sorted(allowed))


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring problem+json for the given statuses."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
