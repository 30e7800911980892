"""create_app(): lifespan resources, middleware, error handlers, routers."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import observability
from app.config import Settings, get_settings
from app.errors import NotFound, Unauthorized, install_error_handlers
from app.logging import choose_format, configure_logging
from app.middleware import (
    ApiCORSMiddleware,
    BodyLimitMiddleware,
    ContentTypeMiddleware,
    IdempotencyMiddleware,
    RateLimitHeadersMiddleware,
)
from app.models.events import EVENT_SCHEMAS, Event
from app.routers import (
    accounts,
    api_keys,
    assignment,
    audit,
    auth,
    conversion,
    deals,
    diagnostics,
    dunning,
    exchange_rates,
    export,
    followups,
    health,
    imports,
    intake,
    intake_sources,
    leads,
    metrics,
    organisation,
    payments,
    pipelines,
    products,
    quotes,
    receivables,
    scoring,
    targets,
    teams,
    users,
    webhooks,
)
from app.services.export.service import EXPORT_HEADERS
from app.state import AppState
from app.workers.registry import assignment_queue

# Routes are matched in order, so the public intake endpoints (the hot path) come first.
ROUTERS = [
    intake.router,
    health.router,
    auth.router,
    organisation.router,
    users.router,
    teams.router,
    api_keys.router,
    leads.router,
    conversion.router,
    assignment.router,
    followups.router,
    intake_sources.router,
    intake_sources.events_router,
    scoring.router,
    diagnostics.router,
    webhooks.router,
    audit.router,
    pipelines.router,
    accounts.router,
    accounts.contacts_router,
    deals.router,
    products.router,
    quotes.router,
    receivables.router,
    receivables.installments_router,
    receivables.receivables_router,
    receivables.metrics_router,
    payments.router,
    payments.credit_router,
    dunning.policies_router,
    dunning.run_router,
    dunning.log_router,
    dunning.messages_router,
    metrics.router,
    imports.router,
    targets.router,
    exchange_rates.router,
    export.router,
]


def document_webhooks(app: FastAPI) -> None:
    """Publish one typed payload per event type in the OpenAPI document's `webhooks` section."""
    for event_type, schema in EVENT_SCHEMAS.items():

        async def receiver(body: Any) -> None:
            """What Loudou POSTs to a subscribed URL (headers: webhook-id, -timestamp, -signature)."""

        # Set at runtime: the concrete payload model differs per event type.
        receiver.__annotations__ = {"body": Event[schema], "return": None}  # type: ignore[valid-type]
        receiver.__name__ = event_type.replace(".", "_")
        app.webhooks.add_api_route(
            event_type,
            receiver,
            methods=["POST"],
            summary=f"{event_type} event",
            description=(schema.__doc__ or "")
            + "\n\nSigned per Standard Webhooks; answer 2xx. 4xx (except 408/429) is final, "
            "410 disables the subscription, anything else is retried with backoff.",
            tags=["webhooks"],
        )


def operation_id(route: APIRoute) -> str:
    """Operation ids are "<tag>:<function>"."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}:{route.name}"


def create_app(settings: Settings | None = None, *, state: AppState | None = None) -> FastAPI:
    """Build the ASGI app; the lifespan opens the engine, Redis and the HTTP client once."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = state is None
        app.state.loudou = state or AppState.open(settings)
        try:
            yield
        finally:
            if opened:
                await app.state.loudou.close()

    app = FastAPI(
        title="Loudou API",
        version="0.1.0",
        summary="Headless sales-process API: leads, deals, quotes, collections and funnel metrics.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    if state is not None:
        app.state.loudou = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    document_webhooks(app)

    def limit_for(path: str) -> int:
        if path.startswith("/v1/intake/email/"):
            return settings.email_max_bytes
        if path == "/v1/leads/import" or path.startswith("/v1/import/"):
            return settings.import_max_bytes
        return settings.max_body_bytes

    # Added innermost first: the last one added sees the request first.
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(ContentTypeMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    if settings.cors_origins:
        app.add_middleware(
            ApiCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "ETag",
                "X-Request-ID",
                "Retry-After",
                "RateLimit",
                "RateLimit-Policy",
                "Location",
                "Link",
                *EXPORT_HEADERS,
            ],
        )
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        update_request_header=True,
    )
    app.add_middleware(observability.RequestTimingMiddleware, access_log=settings.access_log)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text: HTTP metrics, job outcomes, queue depth and lag, outbox backlog."""
        check_metrics_access(settings, request.headers.get("authorization"))
        state: AppState = request.app.state.loudou
        await observability.refresh(state, [settings.queue_name, assignment_queue(settings)])
        return Response(generate_latest(observability.registry()), media_type=CONTENT_TYPE_LATEST)

    return app


def check_metrics_access(settings: Settings, authorization: str | None) -> None:
    """Queue names, volumes and error rates are for the operator: a bearer token when one is
    configured; in production without one, /metrics is off (404)."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if token is None:
        if settings.env == "production":
            raise NotFound("Metrics are off: set LOUDOU_METRICS_TOKEN to scrape them.")
        return
    if not hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        raise Unauthorized("/metrics needs `Authorization: Bearer <LOUDOU_METRICS_TOKEN>`.")


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory app.main:app_factory` (one app per worker process)."""
    settings = get_settings()
    configure_logging(
        settings.log_level, choose_format(settings.log_format, for_people=False, terminal=False)
    )
    return create_app(settings)


def openapi_document(app: FastAPI | None = None) -> dict[str, Any]:
    """The OpenAPI document the app serves (what `loudou openapi` writes)."""
    return (
        app or create_app(Settings(database_url="postgresql+asyncpg://x@/x", redis_url="redis://x"))
    ).openapi()
