"""Acceptance 7, from outside: every offered sort pages through every row, NULLs included, and
a tampered cursor is a 422, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, timedelta
from typing import Any

from tests.conftest import Org
from tests.factories import make_deal


async def _walk(org: Org, path: str, sort: str) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        params: dict[str, Any] = {"limit": 2, "sort": sort}
        if cursor:
            params["cursor"] = cursor
        r = await org.client.get(path, params=params, headers=org.auth())
        assert r.status_code == 200, (sort, r.text)
        seen += [row["id"] for row in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("paging did not end")


async def test_deals_page_through_every_row_in_every_sort_nulls_included(org: Org) -> None:
    today = date.today()
    ids = set()
    for i, (close, amount) in enumerate(
        [(today, "10"), (None, None), (today + timedelta(days=3), "10"), (None, "5"), (today, None)]
    ):
        fields: dict[str, Any] = {"name": f"D{i % 2}"}
        if close is not None:
            fields["expected_close_date"] = str(close)
        if amount is not None:
            fields["amount"] = amount
            fields["currency"] = "USD"
        ids.add((await make_deal(org, **fields))["id"])
    for key in ("created_at", "updated_at", "amount", "expected_close_date", "stage_entered_at", "name"):
        for sort in (key, f"-{key}"):
            seen = await _walk(org, "/v1/deals", sort)
            assert len(seen) == len(set(seen)) and set(seen) == ids, sort


async def test_leads_page_through_every_row_in_every_sort(org: Org) -> None:
    ids = {
        (await org.client.post("/v1/leads", json={"email": f"l{i}@p.example"}, headers=org.auth())).json()[
            "id"
        ]
        for i in range(5)
    }
    for key in ("created_at", "updated_at", "score"):
        for sort in (key, f"-{key}"):
            seen = await _walk(org, "/v1/leads", sort)
            assert len(seen) == len(set(seen)) and set(seen) == ids, sort


def _cursor(raw: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


async def test_a_tampered_cursor_is_422(org: Org) -> None:
    await make_deal(org)
    await make_deal(org)
    row = str(uuid.uuid4())
    bad = [
        "not-a-cursor",
        "%%%",
        _cursor({"a": 1}),
        _cursor(["expected_close_date", "yesterday", row]),
        _cursor(["expected_close_date", {"D": "2026-13-45"}, row]),
        _cursor(["expected_close_date", {"t": "2026-01-01T00:00:00+00:00"}, row]),
        _cursor(["amount", [1, 2], row]),
        _cursor(["amount", {"d": "NaN"}, row]),
        _cursor(["created_at", {"t": "2026-01-01T00:00:00"}, row]),
        _cursor(["name", 5, row]),
        _cursor(["name", "x", "not-a-uuid"]),
        _cursor(["name", "x", {"u": 1}]),
    ]
    for cursor in bad:
        try:
            sort = str(json.loads(base64.urlsafe_b64decode(cursor + "==="))[0])
        except (ValueError, KeyError):
            sort = "name"
        r = await org.client.get(
            "/v1/deals", params={"cursor": cursor, "sort": sort, "limit": 1}, headers=org.auth()
        )
        assert r.status_code == 422, (cursor, r.status_code, r.text)
        assert r.json()["errors"][0]["field"] == "cursor"
