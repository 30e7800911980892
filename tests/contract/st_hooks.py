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
