"""schemathesis hooks for Loudou (loaded through SCHEMATHESIS_HOOKS=tests.contract.st_hooks)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """The history imports read NDJSON: one JSON value a line (a generated string is sent as is)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    """An NDJSON body is text on the wire: a generated object or number for it cannot be sent as
    such (the serializer would turn it into valid lines), so only text is drawn for the imports."""
    operation = getattr(ctx, "operation", None)
    if operation is not None and operation.path.startswith("/v1/import/"):
        return isinstance(body, str | bytes)
    return True
