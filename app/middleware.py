"""Pure ASGI middleware: body size limits, Idempotency-Key replay (timing and access logs:
app.observability.RequestTimingMiddleware; the public intake posts' own path: app.intake_lane).

Written as ASGI callables rather than BaseHTTPMiddleware so bodies are never buffered twice and
streaming responses stay streaming.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import ratelimit
from app.errors import PayloadTooLarge, problem_response
from app.services import idempotency
from app.services.idempotency import Claim
from app.state import AppState

REPLAYED_HEADERS = {"content-type", "etag", "location"}
# Public endpoints dedupe on their own (webhook-id, Message-ID) and login must never be stored.
NO_IDEMPOTENCY_PREFIXES = ("/v1/intake/", "/v1/auth/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


PUBLIC_INTAKE_PREFIX = "/v1/intake/"


class ApiCORSMiddleware(CORSMiddleware):
    """CORS for the API's own frontends (`LOUDOU_CORS_ORIGINS`). The public intake endpoints are
    left to their source's `allowed_origins` (preflight and response headers), which a web
    form on any site may need, so the app-wide list neither answers nor refuses them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PUBLIC_INTAKE_PREFIX):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class RateLimitHeadersMiddleware:
    """`RateLimit-Policy` and `RateLimit` on every answer to a rate-limited request: the standing
    the credential or intake check left in the request's state (a 429 carries its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            await send(with_rate_limit_headers(scope, message))

        await self.app(scope, receive, send_with_headers)


def with_rate_limit_headers(scope: Scope, message: Message) -> Message:
    """A response start with the RateLimit headers of the request's decision added (unless it
    carries its own); any other message as it is. Shared with the intake lane."""
    if message["type"] != "http.response.start":
        return message
    decision = scope.get("state", {}).get(ratelimit.STATE_KEY)
    headers = list(message.get("headers", []))
    if isinstance(decision, ratelimit.Decision) and not any(k.lower() == b"ratelimit" for k, _ in headers):
        headers += [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
        return {**message, "headers": headers}
    return message


class BodyTooLarge(PayloadTooLarge, HTTPException):  # type: ignore[misc]
    """Raised from `receive` past the limit: a PayloadTooLarge that FastAPI's body parsing lets
    through (it turns any other exception raised while reading into a 400)."""

    def __init__(self, detail: str) -> None:
        HTTPException.__init__(self, status_code=413, detail=detail)
        PayloadTooLarge.__init__(self, detail)


class BodyLimitMiddleware:
    """413 for bodies over the limit: at once from Content-Length, else while the body streams in.

    Past the Content-Length check the error is raised from `receive`, inside the endpoint that
    reads the body, so the app's own handler answers it (and intake can record the attempt).
    """

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = declared_over(scope, limit)
        if declared is not None and not scope["path"].startswith(PUBLIC_INTAKE_PREFIX):
            response = problem_response(
                413,
                code="payload_too_large",
                title="Request body too large",
                detail=f"The body is {declared} bytes; the limit here is {limit} bytes.",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, limited(receive, limit), send)


def declared_over(scope: Scope, limit: int) -> str | None:
    """The declared Content-Length when it is over `limit`, else None. An over-limit size is kept
    in the request state (`body_too_large`), where intake finds it to record the attempt."""
    declared = _header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        scope.setdefault("state", {})["body_too_large"] = int(declared)
        return declared
    return None


def limited(receive: Receive, limit: int) -> Receive:
    """`receive` raising BodyTooLarge once more than `limit` bytes of body have arrived."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(f"The body exceeds the limit of {limit} bytes here.")
        return message

    return limited_receive


ACCEPTED_BODY_TYPES = (
    "application/json",
    "multipart/form-data",
    "application/x-www-form-urlencoded",
    "text/csv",
    "application/x-ndjson",
    "application/jsonl",
)
# Endpoints that take a raw file and check its type themselves (PNG/JPEG logo upload).
RAW_BODY_PATHS = frozenset({"/v1/organisation/logo"})


class ContentTypeMiddleware:
    """415 for a body the API cannot read: JSON (or `+json`), multipart uploads and CSV only.

    Public intake endpoints accept whatever their providers send and check it themselves, and
    so does the logo upload (RAW_BODY_PATHS).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PUT", "PATCH")
            and scope["path"].startswith("/v1/")
            and not scope["path"].startswith("/v1/intake/")
            and scope["path"] not in RAW_BODY_PATHS
        ):
            length = _header(scope, b"content-length")
            has_body = (length is not None and length != "0") or _header(scope, b"transfer-encoding")
            media = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if has_body and not (media in ACCEPTED_BODY_TYPES or media.endswith("+json")):
                await problem_response(
                    415,
                    code="unsupported_media_type",
                    title="Unsupported content type",
                    detail=f"Send JSON (Content-Type: application/json), not {media or 'no type'}.",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


class IdempotencyMiddleware:
    """`Idempotency-Key` on POST: the first successful response is stored and replayed.

    The key is scoped to the caller (a hash of its credential). Same key and same request ->
    the stored response, with `Idempotent-Replayed: true`; same key with another body -> 422;
    while the first is still running -> 409. Only 2xx/3xx answers are kept, so a request that
    failed can be corrected and retried under the same key. Kept 24 h (LOUDOU_IDEMPOTENCY_TTL_HOURS).

    Never stored: unauthenticated requests, login and public intake (the key is ignored there),
    and responses marked `Cache-Control: no-store` (the ones carrying a new API key, webhook
    secret or token), so no secret sits in the table. Caller and request are HMACs under the
    server's secret key, so the table cannot be used to test guesses of a request body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = _header(scope, b"idempotency-key")
        credential = _header(scope, b"authorization")
        if key is None or credential is None or scope["path"].startswith(NO_IDEMPOTENCY_PREFIXES):
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= 255:
            await problem_response(
                400,
                code="invalid_idempotency_key",
                title="Invalid Idempotency-Key",
                detail="An Idempotency-Key is 1 to 255 characters.",
            )(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except PayloadTooLarge as exc:
            await problem_response(413, code=exc.code, title=exc.title, detail=exc.detail)(
                scope, receive, send
            )
            return
        state: AppState = scope["app"].state.loudou
        secret = state.settings.resolved_secret_key().encode()
        caller_hash = hmac.new(secret, b"caller\n" + credential.encode(), hashlib.sha256).hexdigest()
        request_hash = hmac.new(
            secret,
            b"\n".join(
                [
                    scope["method"].encode(),
                    scope["path"].encode(),
                    scope.get("query_string", b""),
                    body,
                ]
            ),
            hashlib.sha256,
        ).hexdigest()
        replay = await self._claim(state, caller_hash, key, scope, request_hash)
        if replay is not None:
            await replay(scope, receive, send)
            return

        sent_body = False

        async def replay_receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        captured: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray()}

        async def capture_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", [])
                ]
            elif message["type"] == "http.response.body":
                captured["body"].extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        finally:
            await self._finish(state, caller_hash, key, scope, captured)

    async def _claim(
        self, state: AppState, caller_hash: str, key: str, scope: Scope, request_hash: str
    ) -> Any:
        async with state.sessions() as session:
            found, record = await idempotency.claim(
                session,
                caller_hash=caller_hash,
                key=key,
                method=scope["method"],
                path=scope["path"],
                request_hash=request_hash,
            )
            if found is Claim.claimed:
                await session.commit()
                return None
            assert record is not None
            if found is Claim.reused:
                return problem_response(
                    422,
                    code="idempotency_key_reused",
                    title="Idempotency-Key reused",
                    detail="This Idempotency-Key was used with another request; use a new key.",
                )
            if found is Claim.replay and record.response_status is not None:
                headers = {k: v for k, v in record.response_headers if k.lower() in REPLAYED_HEADERS}
                headers["Idempotent-Replayed"] = "true"
                return _RawResponse(record.response_status, headers, record.response_body or b"")
            return problem_response(
                409,
                code="idempotency_in_progress",
                title="Request in progress",
                detail="A request with this Idempotency-Key is still running; retry shortly.",
                headers={"Retry-After": "1"},
            )

    async def _finish(
        self, state: AppState, caller_hash: str, key: str, scope: Scope, captured: dict[str, Any]
    ) -> None:
        principal = scope.get("state", {}).get("principal")
        async with state.sessions() as session:
            no_store = any(
                k.lower() == "cache-control" and "no-store" in v.lower() for k, v in captured["headers"]
            )
            await idempotency.finish(
                session,
                caller_hash=caller_hash,
                key=key,
                # An answer carrying a secret (Cache-Control: no-store) is forgotten like a failure.
                status=captured["status"] if not no_store else 599,
                headers=captured["headers"],
                body=bytes(captured["body"]),
                org_id=principal.org_id if principal is not None else None,
            )
            await session.commit()


class _RawResponse:
    """A stored response played back byte for byte."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*self.headers, (b"content-length", str(len(self.body)).encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
