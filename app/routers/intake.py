"""Public intake endpoints: web forms, Standard Webhooks, inbound email.

Authenticated by the source's key in the URL and its signature or credentials, not by an API
key. Each request is stored as an inbound event before it is parsed; rejections are answered
with problem+json while the event is committed, so nothing that reached us is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import SessionDep, request_session
from app.errors import Forbidden, PayloadTooLarge, problem_response, problem_responses
from app.models.intake import EventStatus, IntakeResult, IntakeSource, SourceKind
from app.services.intake import email as email_intake
from app.services.intake import service
from app.services.intake.payloads import JSON_TYPES, media_type
from app.services.intake.service import Outcome, RequestMeta
from app.state import AppState

router = APIRouter(prefix="/v1/intake", tags=["intake"])

INTAKE_ERRORS = problem_responses(400, 401, 403, 404, 413, 415, 422, 429)
SUCCESS: dict[int | str, dict[str, Any]] = {
    200: {"model": IntakeResult, "description": "Merged into an existing lead, or a repeat of a known event"},
    202: {"model": IntakeResult, "description": "Accepted (spam is dropped silently)"},
}
FORM_SUCCESS: dict[int | str, dict[str, Any]] = {
    **SUCCESS,
    303: {"description": "Redirect to the source's redirect_url (plain HTML form posts)"},
}
ACCEPTED = {EventStatus.created, EventStatus.merged, EventStatus.activity, EventStatus.spam}
_FORM_EXAMPLE = {"email": "li.wei@example.cn", "name": "李伟", "company": "Acme Ltd", "message": "Call me."}
# A form post carries a body (an empty one is 415): the website's own field names, which the
# source's field mapping turns into lead fields; unmapped fields are kept on the event.
FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {"type": "object", "additionalProperties": True, "examples": [_FORM_EXAMPLE]},
                "example": _FORM_EXAMPLE,
            }
            for media in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
        },
    }
}


def app_state(request: Request) -> AppState:
    """The process's resources. The intake endpoints take them, and open their session
    (`request_session`), themselves rather than through dependencies: FastAPI's dependency
    machinery cost the busiest request half a millisecond for the two."""
    state: AppState = request.app.state.loudou
    return state


def request_meta(request: Request) -> RequestMeta:
    """Lower-cased headers and the peer address."""
    return RequestMeta(
        headers={k.lower(): v for k, v in request.headers.items()},
        remote=request.client.host if request.client else None,
    )


async def read_body(request: Request, limit: int) -> tuple[bytes | None, int]:
    """The whole body, or (None, size) when it is over the limit (declared or streamed)."""
    declared = getattr(request.state, "body_too_large", None)
    if declared is not None:
        return None, int(declared)
    try:
        body = await request.body()
    except PayloadTooLarge:
        return None, limit + 1
    return body, len(body)


def respond(outcome: Outcome, *, cors_origin: str | None = None, redirect: str | None = None) -> Response:
    """problem+json for a rejection (with the event id), a 303 for browsers, else the JSON result."""
    headers = {"Access-Control-Allow-Origin": cors_origin, "Vary": "Origin"} if cors_origin else {}
    error = outcome.error
    if error is not None:
        return problem_response(
            error.status,
            code=error.code,
            title=error.title,
            detail=error.detail,
            errors=error.errors,
            headers={**error.headers, **headers},
            extra={"inbound_event_id": str(outcome.result.inbound_event_id)},
        )
    if redirect and outcome.result.status in ACCEPTED:
        return RedirectResponse(redirect, status_code=303, headers=headers)
    # Serialised by pydantic in one step (the same compact JSON a JSONResponse of its dump makes).
    return Response(
        outcome.result.model_dump_json(),
        status_code=outcome.status_code,
        headers=headers,
        media_type="application/json",
    )


def wants_json(request: Request) -> bool:
    """A JSON body or an Accept naming JSON means a script, not a plain HTML form post."""
    accept = request.headers.get("accept", "")
    return "json" in accept or media_type(request.headers.get("content-type")) in JSON_TYPES


Receiver = Callable[[AsyncSession, IntakeSource, RequestMeta, bytes], Awaitable[Outcome]]


async def take_post(
    request: Request, key: str, kind: SourceKind, *, limit: int, receive: Receiver
) -> tuple[IntakeSource, Outcome]:
    """What every public intake post does, in one request session committed before the answer:
    the active source with this key (404 otherwise), the rate limit, the body within `limit` (an
    over-limit one is recorded without it and answered 413), then `receive`."""
    state = app_state(request)
    async with request_session(state) as session:
        # A cache miss ends the read it began (services.cache): no connection is held while
        # Redis and the body are awaited.
        source = await service.open_source(session, key, kind)
        request.state.ratelimit = await service.rate_limit(
            state, source, request.client.host if request.client else None
        )
        meta = request_meta(request)
        body, size = await read_body(request, limit)
        if body is None:
            outcome = await service.record_too_large(session, source, meta, size=size, limit=limit)
        else:
            outcome = await receive(session, source, meta, body)
    return source, outcome


@router.post(
    "/forms/{key}",
    response_model=IntakeResult,
    status_code=201,
    summary="Submit a web form",
    responses={**FORM_SUCCESS, **INTAKE_ERRORS},
    openapi_extra=FORM_BODY,
)
async def submit_form(key: str, request: Request) -> Response:
    """JSON, urlencoded or multipart; 303 to `redirect_url` for plain form posts, else JSON."""
    limit = app_state(request).settings.max_body_bytes
    source, outcome = await take_post(
        request, key, SourceKind.form, limit=limit, receive=partial(service.receive_form, max_part_size=limit)
    )
    origin = request.headers.get("origin")
    cors = origin if origin and service.check_origin(source, origin) else None
    redirect = source.redirect_url if not wants_json(request) else None
    return respond(outcome, cors_origin=cors, redirect=redirect)


@router.options(
    "/forms/{key}",
    status_code=204,
    summary="CORS preflight for a web form",
    responses=problem_responses(403, 404),
)
async def preflight_form(key: str, request: Request, session: SessionDep) -> Response:
    """Answers a browser's preflight with the source's allowed origins."""
    source = await service.open_source(session, key, SourceKind.form)
    origin = request.headers.get("origin")
    if not origin or not service.check_origin(source, origin):
        raise Forbidden("This origin may not post to this form.")
    headers: dict[str, Any] = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get("access-control-request-headers")
        or "Content-Type, Accept",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
    return Response(status_code=204, headers=headers)


@router.post(
    "/webhooks/{key}",
    response_model=IntakeResult,
    status_code=201,
    summary="Receive a signed webhook",
    responses={**SUCCESS, **INTAKE_ERRORS},
)
async def receive_webhook(key: str, request: Request) -> Response:
    """Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`); a repeated id
    answers the first result and creates nothing."""
    limit = app_state(request).settings.max_body_bytes
    _, outcome = await take_post(
        request, key, SourceKind.webhook, limit=limit, receive=service.receive_webhook
    )
    return respond(outcome)


@router.post(
    "/email/{key}",
    response_model=IntakeResult,
    status_code=201,
    summary="Receive an inbound email",
    responses={**SUCCESS, **INTAKE_ERRORS},
)
async def receive_email(key: str, request: Request) -> Response:
    """SendGrid Inbound Parse, Mailgun routes, Postmark inbound JSON or raw `message/rfc822`, per the
    source's provider; a reply or mail from a known lead becomes an activity on that lead."""
    limit = app_state(request).settings.email_max_bytes
    _, outcome = await take_post(
        request,
        key,
        SourceKind.email,
        limit=limit,
        receive=partial(email_intake.receive_email, max_part_size=limit),
    )
    return respond(outcome)
