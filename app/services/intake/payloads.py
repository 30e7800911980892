"""Reading intake bodies from stored bytes: JSON, urlencoded and multipart (for live requests and replays).

The body is always read whole first (it is stored before parsing), so parsing works on bytes;
multipart goes through Starlette's own parser with the part-size limit raised to the body limit.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from app.errors import BadRequest, UnsupportedMediaType

JSON_TYPES = ("application/json", "text/json")
MAX_FIELDS = 5000
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def media_type(content_type: str | None) -> str:
    """The bare media type, lower-cased (`multipart/form-data; boundary=…` -> `multipart/form-data`)."""
    return (content_type or "").split(";")[0].strip().lower()


def _collect(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in items:
        if key.endswith("[]"):
            key = key[:-2]
            out.setdefault(key, [])
        if key in out:
            current = out[key]
            out[key] = [*current, value] if isinstance(current, list) else [current, value]
        else:
            out[key] = value
    return out


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python accepts them and PostgreSQL then refuses them.
    raise ValueError(f"{name} is not a JSON value")


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object; 400 for malformed JSON or anything but an object."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except ValueError as exc:  # malformed, not UTF-8, or an integer past Python's 4,300-digit limit
        raise BadRequest(f"The body is not valid JSON: {str(exc)[:200]}.") from exc
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise BadRequest("The JSON body must be an object.")
    return data


async def parse_multipart(body: bytes, content_type: str, *, max_part_size: int) -> dict[str, Any]:
    """Fields of a multipart body; uploaded files are listed by name (their content is in the raw body)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode("latin-1"))],
    }
    request = Request(scope, receive)
    try:
        form = await request.form(max_part_size=max_part_size, max_fields=MAX_FIELDS, max_files=100)
    except MultiPartException as exc:
        raise BadRequest(f"The multipart body cannot be read: {exc.message}.") from exc
    items: list[tuple[str, Any]] = []
    files: list[dict[str, Any]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append({"field": key, "filename": value.filename, "content_type": value.content_type})
        else:
            items.append((key, value))
    await form.close()
    data = _collect(items)
    if files:
        data["_files"] = files
    return data


async def parse_body(body: bytes, content_type: str | None, *, max_part_size: int) -> dict[str, Any]:
    """JSON, urlencoded or multipart into a flat-ish dict; 415 for anything else, 400 when unreadable."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind.endswith("+json"):
        return parse_json(body)
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest("The form body is not UTF-8.") from exc
        try:
            return _collect(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS))
        except ValueError as exc:
            raise BadRequest(f"The form body has more than {MAX_FIELDS} fields.") from exc
    if kind == "multipart/form-data":
        return await parse_multipart(body, content_type or "", max_part_size=max_part_size)
    raise UnsupportedMediaType(
        f"Content type {kind or '(none)'!r} is not accepted here; "
        "send JSON, urlencoded or multipart form data."
    )
