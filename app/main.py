"""create_app(): lifespan resources, middleware, error handlers, routers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi._compat.v2 import GenerateJsonSchema as FastAPIJsonSchema
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from app import observability
from app.config import GC_YOUNG_THRESHOLD, Settings, get_settings
from app.db import fill_pool
from app.errors import NotFound, Unauthorized, install_error_handlers
from app.intake_lane import IntakeLane
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
from app.services import maintenance
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


def _decimal_pattern(schema: core_schema.DecimalSchema) -> str:
    """A plain decimal string (no exponent) within the field's digits and bounds, where a regular
    expression can say them: the sign, a power-of-ten upper bound (percentages), more than zero."""
    places, digits = schema.get("decimal_places"), schema.get("max_digits")
    whole = None if digits is None else digits - (places or 0)
    upper = schema.get("le")
    top = ""
    if upper is not None and upper > 0 and Decimal(upper).log10() == Decimal(upper).log10().to_integral():
        power = int(Decimal(upper).log10())
        whole = power if whole is None else min(whole, power)
        top = "|0*1" + "0" * power + r"(\.0*)?"
    w_one = "+" if whole is None else f"{{1,{whole}}}"
    w_any = "*" if whole is None else f"{{0,{whole}}}"
    p_any = "*" if places is None else f"{{0,{places}}}"
    p_one = "+" if places is None else f"{{1,{places}}}"
    body = rf"0*[0-9]{w_one}(\.[0-9]{p_any}0*)?|0*[0-9]{w_any}\.[0-9]{p_one}0*{top}"
    lower = schema.get("ge", schema.get("gt"))
    sign = r"\+?" if lower is not None and lower >= 0 else "[+-]?"
    positive = "(?=.*[1-9])" if schema.get("gt") is not None and schema.get("gt") == 0 else ""
    return rf"^{positive}{sign}({body})$"


def _decimal_json_schema(self: GenerateJsonSchema, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
    """What a Decimal field accepts, stated in the document: a JSON number within the field's digits,
    or a plain decimal string (no exponent) matching them; pydantic alone says `number | string`."""
    json_schema = _plain_decimal_schema(self, schema)
    if self.mode != "validation":
        return json_schema
    number: dict[str, Any] = {"type": "number"}
    bounds = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
    for key, name in bounds.items():
        if schema.get(key) is not None:
            number[name] = float(schema[key])  # type: ignore[literal-required]
    places, digits = schema.get("decimal_places"), schema.get("max_digits")
    if digits is not None:
        bound = float(10 ** (digits - (places or 0)))
        number.setdefault("exclusiveMaximum", bound)
        if "minimum" not in number and "exclusiveMinimum" not in number:
            number["exclusiveMinimum"] = -bound
    if places is not None:
        number["multipleOf"] = float(Decimal(1).scaleb(-places))
    return {"anyOf": [number, {"type": "string", "pattern": _decimal_pattern(schema)}]}


_plain_decimal_schema = GenerateJsonSchema.decimal_schema
# FastAPI builds the document with its own subclass of pydantic's generator; give it the Decimal
# schema above (pydantic documents `get_decimal_pattern` for this, which misses the number branch).
FastAPIJsonSchema.decimal_schema = _decimal_json_schema  # type: ignore[method-assign]


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


def uuid_path_ids(router: APIRouter) -> None:
    """Route a path segment to an `{x_id}` parameter only when it is a UUID, as the document says
    (`format: uuid`): `PATCH /v1/leads/import` is then a 405 naming `Allow: POST`, not a 422 about a
    lead id, and a malformed id is a 404 like an unknown one. (Idempotent: routers are modules.)"""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for param in route.dependant.path_params:
            if param.field_info.annotation is uuid.UUID and "{" + param.name + "}" in route.path:
                route.path = route.path.replace("{" + param.name + "}", "{" + param.name + ":uuid}")


def parameters_without_null(document: dict[str, Any]) -> dict[str, Any]:
    """A header or query parameter is either sent or not (`required: false`); it is never JSON null,
    so `X | None` in a signature is documented as X alone (else generators send the text "null")."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = param.get("schema", {})
                branches = schema.get("anyOf")
                if param.get("in") in ("header", "query") and isinstance(branches, list):
                    kept = [b for b in branches if b != {"type": "null"}]
                    if len(kept) == 1:
                        del schema["anyOf"]
                        param["schema"] = {**kept[0], **schema}
                    elif kept:
                        schema["anyOf"] = kept
    return document


RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds until the limit's window resets and the request may be sent again.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RateLimit-Policy": {
        "description": 'The limits that apply (IETF RateLimit header fields draft): `"source";q=600;w=60`.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left of the tightest limit, e.g. `"source";r=0;t=42`.',
        "schema": {"type": "string"},
    },
}


def rate_limit_headers(document: dict[str, Any]) -> dict[str, Any]:
    """Every 429 says when to come back and which limit it hit (`Retry-After`, `RateLimit`,
    `RateLimit-Policy`: the headers app.ratelimit sends), declared once under components."""
    document.setdefault("components", {})["headers"] = RATE_LIMIT_HEADERS
    for item in document.get("paths", {}).values():
        for operation in item.values():
            limited = operation.get("responses", {}).get("429") if isinstance(operation, dict) else None
            if limited is not None:
                limited["headers"] = {
                    name: {"$ref": f"#/components/headers/{name}"} for name in RATE_LIMIT_HEADERS
                }
    return document


# How requests are identified (X-Request-ID): one set of options for the stack and the intake lane.
REQUEST_ID: dict[str, Any] = {"header_name": "X-Request-ID", "update_request_header": True}


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
        stop = asyncio.Event()
        statistics: asyncio.Task[None] | None = None
        if opened:  # a server of its own, not an app sharing a test's state
            # A full pool before the first request: under load a lazily grown pool opened its
            # last connections mid-traffic (a steady 60 s full-form run opened one).
            await fill_pool(app.state.loudou.engine, settings.db_pool_size)
            statistics = asyncio.create_task(
                maintenance.keep_statistics_fresh(app.state.loudou.sessions, stop)
            )
            # What is alive now (modules, models, compiled schemas: ~300k objects) lives as long as
            # the process: out of the collector's sight, a full collection no longer walks it.
            # Measured under intake load: 0.45-0.60 s of collection per 5 s fell to 0.12-0.17 s.
            gc.collect()
            gc.freeze()
            # A young collection walks every live container object the requests in flight hold
            # (tens of posts' rows and dicts under load), and the default threshold runs one every
            # 700 allocations: 4-7 % of an API process under full-form intake. Most of a request's
            # objects die by reference counting long before 20,000 allocations; cycles wait longer.
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            stop.set()
            if statistics is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(statistics, timeout=5)
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
        uuid_path_ids(router)
        app.include_router(router)
    document_webhooks(app)
    build_document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rate_limit_headers(parameters_without_null(build_document()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

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
    app.add_middleware(CorrelationIdMiddleware, **REQUEST_ID)
    app.add_middleware(observability.RequestTimingMiddleware, access_log=settings.access_log)
    # Outermost: the public intake posts (the hot path) skip the middleware above and FastAPI's
    # routing; the lane does for them what those did (app.intake_lane).
    app.add_middleware(
        IntakeLane,
        routes=[r for r in intake.router.routes if isinstance(r, APIRoute) and r.methods == {"POST"}],
        exception_handlers=app.exception_handlers,
        limit_for=limit_for,
        request_id=REQUEST_ID,
        access_log=settings.access_log,
    )

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
