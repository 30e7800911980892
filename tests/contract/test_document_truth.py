"""What the document states and the app enforces (each found by schemathesis once): Allow on 405,
the If-Match shape, ISO dates only, JSON booleans and integers, decimal patterns, no null params."""

from __future__ import annotations

import re
import uuid

from app.main import openapi_document
from tests.conftest import Org

DOCUMENT = openapi_document()


async def test_a_method_a_path_does_not_serve_is_405_naming_every_method_it_does(org: Org) -> None:
    r = await org.client.patch("/v1/leads/import", json={}, headers=org.auth())
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.headers["content-type"] == "application/problem+json"
    r = await org.client.put(f"/v1/leads/{uuid.uuid4()}", json={}, headers=org.auth())
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"


async def test_a_malformed_path_id_is_404(org: Org) -> None:
    r = await org.client.get("/v1/leads/not-a-uuid", headers=org.auth())
    assert r.status_code == 404


async def test_if_match_is_an_etag_or_a_422_and_a_stale_one_412(org: Org) -> None:
    r = await org.client.post(
        "/v1/leads", json={"name": "甲", "email": "etag@example.com"}, headers=org.auth()
    )
    url = f"/v1/leads/{r.json()['id']}"
    for bad in ("null", 'W/"1"', "", "abc"):
        r = await org.client.patch(url, json={"name": "乙"}, headers={**org.auth(), "If-Match": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "if-match"
    r = await org.client.patch(url, json={"name": "乙"}, headers={**org.auth(), "If-Match": '"99"'})
    assert r.status_code == 412
    r = await org.client.patch(url, json={"name": "乙"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'


async def test_dates_are_iso_text_in_queries_and_bodies(org: Org) -> None:
    r = await org.client.get("/v1/leads", params={"created_from": "0"}, headers=org.auth())
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "created_from"
    r = await org.client.get("/v1/leads", params={"created_from": "2026-01-01T00:00:00Z"}, headers=org.auth())
    assert r.status_code == 200
    body = {"date": 0, "from": "USD", "to": "CNY", "rate": "7.1"}
    r = await org.client.post("/v1/exchange-rates", json=body, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post("/v1/exchange-rates", json=body | {"date": "2026-01-02"}, headers=org.auth())
    assert r.status_code == 201, r.text


async def test_json_booleans_and_integers_are_not_read_across_types(org: Org) -> None:
    rule = {"name": "Big", "field": "industry", "operator": "eq", "value": "x", "points": 5}
    r = await org.client.post("/v1/scoring-rules", json=rule | {"active": 1}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post("/v1/scoring-rules", json=rule | {"points": False}, headers=org.auth())
    assert r.status_code == 422
    r = await org.client.post("/v1/scoring-rules", json=rule | {"active": False}, headers=org.auth())
    assert r.status_code == 201, r.text
    assert r.json()["active"] is False


def test_decimals_state_their_digits_and_parameters_are_never_null() -> None:
    credit = DOCUMENT["components"]["schemas"]["AccountCreate"]["properties"]["credit_limit"]["anyOf"]
    number, text = credit[0], credit[1]
    assert number["exclusiveMaximum"] == 1e14 and number["multipleOf"] == 0.0001
    assert re.fullmatch(text["pattern"], "12345678901234.5678")
    assert not re.fullmatch(text["pattern"], "123456789012345")
    assert not re.fullmatch(text["pattern"], "1.23456")
    assert not re.fullmatch(text["pattern"], "-1")
    for item in DOCUMENT["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                assert {"type": "null"} not in param["schema"].get("anyOf", []), param
    assert not [name for name in DOCUMENT["components"]["schemas"] if name.endswith(("-Input", "-Output"))]
