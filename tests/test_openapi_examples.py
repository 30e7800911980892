"""Every JSON request body in the OpenAPI document carries a realistic example, and every example
is a body its endpoint's model accepts (so "Try it out" on /docs starts from a valid request)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import BaseModel

from app.main import openapi_document
from tests.conftest import Org

HAN = re.compile(r"[\u4e00-\u9fff]")


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The component schemas a request body refers to (directly or through anyOf)."""
    refs = [schema.get("$ref"), *(s.get("$ref") for s in schema.get("anyOf", []))]
    if not any(refs):  # an inline schema (the web form's free-form body)
        return [schema]
    return [doc["components"]["schemas"][ref.split("/")[-1]] for ref in refs if ref]


def _app_models() -> dict[str, list[type[BaseModel]]]:
    """Every pydantic model of the app, by class name (the OpenAPI component names)."""
    found: dict[str, list[type[BaseModel]]] = {}
    pending: list[type[BaseModel]] = [BaseModel]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("app.") and cls not in found.get(cls.__name__, []):
            found.setdefault(cls.__name__, []).append(cls)
    return found


def _model_of(component: dict[str, Any], candidates: list[type[BaseModel]]) -> type[BaseModel]:
    """The class a component schema was made from (two classes may share a name: the one whose
    fields are the component's)."""
    fields = set(component.get("properties", {}))
    matching = [c for c in candidates if {f.alias or n for n, f in c.model_fields.items()} == fields]
    assert len(matching) == 1, (component.get("title"), candidates)
    return matching[0]


def _body_models() -> list[tuple[str, type[BaseModel]]]:
    """(operation, model) for every JSON request body in the OpenAPI document."""
    doc, models, out = openapi_document(), _app_models(), []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            schema = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            )
            if schema is None:
                continue
            for ref in [schema.get("$ref"), *(s.get("$ref") for s in schema.get("anyOf", []))]:
                if ref:
                    name = ref.split("/")[-1]
                    model = _model_of(doc["components"]["schemas"][name], models[name])
                    out.append((f"{method.upper()} {path}", model))
    return out


def test_every_json_request_body_has_an_example() -> None:
    doc = openapi_document()
    missing, chinese = [], 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            schemas = _resolve(doc, content["application/json"]["schema"])
            examples = [e for s in schemas for e in s.get("examples", [])]
            if not examples:
                missing.append(f"{method.upper()} {path}")
            chinese += any(HAN.search(str(e)) for e in examples)
    assert missing == []
    assert chinese >= 20  # Chinese values where a team in China would type them


@pytest.mark.parametrize(("route", "model"), _body_models(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_example_is_accepted_by_its_model(route: str, model: type[BaseModel]) -> None:
    examples = model.model_json_schema().get("examples") or []
    assert examples, f"{route}: {model.__name__} has no example"
    for example in examples:
        model.model_validate(example)


PLACEHOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _try_it_out_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, example) for every operation "Try it out" can send as documented: no path
    parameter, a JSON body whose example names no placeholder id, and not the login."""
    doc, out = openapi_document(), []
    for path, operations in doc["paths"].items():
        if "{" in path or path == "/v1/auth/token":
            continue
        for method, operation in operations.items():
            schema = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            )
            if schema is None:
                continue
            example = next(e for s in _resolve(doc, schema) for e in s.get("examples", []))
            if not PLACEHOLDER.search(json.dumps(example)):
                out.append((method.upper(), path, example))
    return out


async def test_try_it_out_succeeds_with_the_documented_examples(org: Org) -> None:
    cases = _try_it_out_cases()
    assert {path for _, path, _ in cases} >= {
        "/v1/leads",
        "/v1/accounts",
        "/v1/contacts",
        "/v1/deals",
        "/v1/products",
        "/v1/intake-sources",
        "/v1/users",
        "/v1/organisation",
    }
    for method, path, example in cases:
        r = await org.client.request(method, path, json=example, headers=org.auth())
        assert r.status_code in (200, 201), (method, path, r.text)
