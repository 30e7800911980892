"""A webhook receiver for the fault tests: uvicorn in a thread of its own, one path per
behaviour (answer at once, slowly, or hang), recording each request's `webhook-id` and time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.faults.harness import free_port, wait_until


@dataclass
class Received:
    webhook_id: str
    signature: str
    at: float  # time.monotonic()
    body: bytes


@dataclass
class Receiver:
    """`delays` maps a path (`/ok`, `/slow`, `/hang`) to the seconds it waits before answering 200."""

    delays: dict[str, float]
    port: int = field(default_factory=free_port)
    received: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        self.received[path].append(
            Received(
                request.headers.get("webhook-id", ""),
                request.headers.get("webhook-signature", ""),
                time.monotonic(),
                body,
            )
        )
        await asyncio.sleep(self.delays.get(path, 0.0))
        return Response(status_code=200)

    def start(self) -> None:
        app = Starlette(routes=[Route(p, self._handle, methods=["POST"]) for p in self.delays])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            timeout_graceful_shutdown=1,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, timeout=20, what="receiver up")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def ids(self, path: str) -> list[str]:
        return [r.webhook_id for r in self.received[path]]
