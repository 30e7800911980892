"""The public intake posts (the hot path) answered without the generic stack.

Through the whole app a web-form post spent CPU in machinery that does nothing for it: FastAPI's
routing and dependency solving (the endpoints take only their key and the Request) and middleware
that lets /v1/intake/ pass untouched (CORS, Content-Type, Idempotency-Key). Measured with the
endpoint stubbed out: ~0.14-0.19 ms a post through the stack, ~0.07-0.09 ms through this lane
(what is left: Starlette's and FastAPI's outermost layers, metrics, request id, error handling).
IntakeLane, the outermost user middleware, matches the intake POST routes itself and gives them
what the stack gave them, in the stack's order and from the same code:

    RequestTimingMiddleware     observability.timed: the same series, labels and access-log line
    CorrelationIdMiddleware     the library's own middleware, with the stack's options
    BodyLimitMiddleware         middleware.declared_over and middleware.limited
    RateLimitHeadersMiddleware  middleware.with_rate_limit_headers
    exception handlers          Starlette's ExceptionMiddleware and request_response, with the
                                app's handlers; what none takes (the 500) still propagates to
                                Starlette's ServerErrorMiddleware, outside every user middleware
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from app import observability
from app.middleware import PUBLIC_INTAKE_PREFIX, declared_over, limited, with_rate_limit_headers


class IntakeLane:
    """Serves POSTs to `routes` (the public intake endpoints) directly; everything else, the
    preflight included, goes on to the wrapped app unchanged.

    Add it last (outermost), with the options the stack's own middleware get: `request_id` as
    given to CorrelationIdMiddleware, `limit_for` as given to BodyLimitMiddleware, `access_log`
    as given to RequestTimingMiddleware, and the app's `exception_handlers` (the dict itself:
    the lane is built with the rest of the stack, on the first request, when it is complete).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[APIRoute],
        exception_handlers: Mapping[Any, ExceptionHandler],
        limit_for: Callable[[str], int],
        request_id: Mapping[str, Any],
        access_log: bool,
    ) -> None:
        self.app = app
        self.routes = [served_directly(route) for route in routes]
        self.limit_for = limit_for
        self.access_log = access_log
        # The handlers the stack's ExceptionMiddleware is given: Starlette keeps the one for
        # Exception (or 500) for ServerErrorMiddleware, which still wraps the lane.
        handlers = {key: value for key, value in exception_handlers.items() if key not in (500, Exception)}
        self.endpoint = ExceptionMiddleware(request_response(call_endpoint), handlers=handlers)
        # The library's middleware rather than a copy of its code: the lane and the stack then
        # take, check, replace and answer the id one way, whatever the release (a copy would
        # save ~5 µs a request).
        self.with_request_id = CorrelationIdMiddleware(self.within_limits, **request_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.matched(scope):
            await self.app(scope, receive, send)
            return
        await observability.timed(self.with_request_id, scope, receive, send, log=self.access_log)

    def matched(self, scope: Scope) -> bool:
        """Whether this is a POST to one of the routes; if so the scope is filled in as the
        router would (`router`, `route`, `endpoint`, `path_params`).

        A request with a root_path is left to the stack: the generic middleware judge the full
        path, the router the path below root_path, and only the stack answers it as before."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not scope["path"].startswith(PUBLIC_INTAKE_PREFIX)
        ):
            return False
        for route in self.routes:
            match = route.path_regex.match(scope["path"])
            if match is None:
                continue
            params = {
                name: route.param_convertors[name].convert(value) for name, value in match.groupdict().items()
            }
            scope.setdefault("router", scope["app"].router)
            scope["route"] = route
            scope["endpoint"] = route.endpoint
            scope["path_params"] = {**scope.get("path_params", {}), **params}
            return True
        return False

    async def within_limits(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BodyLimitMiddleware's and RateLimitHeadersMiddleware's part in an intake post: an
        over-limit body is recorded by the endpoint (413), the answer carries the RateLimit
        headers of the decision the endpoint left in the request state."""
        limit = self.limit_for(scope["path"])
        declared_over(scope, limit)

        async def send_with_headers(message: Message) -> None:
            await send(with_rate_limit_headers(scope, message))

        await self.endpoint(scope, limited(receive, limit), send_with_headers)


async def call_endpoint(request: Request) -> Response:
    """The matched endpoint, given what FastAPI would give it: its path parameters and the Request."""
    endpoint: Callable[..., Awaitable[Response]] = request.scope["endpoint"]
    return await endpoint(**request.path_params, request=request)


def served_directly(route: APIRoute) -> APIRoute:
    """`route`, checked to be one that calling directly loses nothing: a POST whose endpoint takes
    string path parameters and the Request alone (nothing for FastAPI to parse, validate or
    inject), returns a Response (nothing to serialise) and has no body limit of FastAPI's own."""
    hints = typing.get_type_hints(route.endpoint)
    path = {param.name for param in route.dependant.path_params}
    direct = (
        route.methods == {"POST"}
        and set(inspect.signature(route.endpoint).parameters) == path | {"request"}
        and all(hints.get(name) is str for name in path)
        and hints.get("request") is Request
        and isinstance(hints.get("return"), type)
        and issubclass(hints["return"], Response)
        and not route.dependant.dependencies
        and route.max_body_size is None
    )
    if not direct:
        raise ValueError(f"POST {route.path} needs FastAPI's request handling; it cannot be served directly")
    return route
