"""One raw ASGI request, for what an HTTP client will not send (a false Content-Length, a body
that stops halfway), with every message the app sent back."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message


async def raw_post(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]
) -> list[Message]:
    """POST `path` with `headers`, `receive` giving `messages` then a disconnect."""
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return sent
