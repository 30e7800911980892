"""History import (NDJSON): per-line errors with line numbers, good lines land, idempotent by
external_id, dry runs write nothing, imported timestamps kept and audited as imports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from app.models.audit import AuditEntry
from app.models.deal import Deal, DealFieldHistory, DealStageHistory
from app.state import AppState
from tests.conftest import Org
from tests.routers.metrics_reference import ndjson, post_import


def _deal(ext: str, created: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "external_id": ext,
        "name": f"Deal {ext}",
        "amount": "1000.00",
        "currency": "USD",
        "created_at": created.isoformat(),
        "stage_history": [
            {"stage": "prospect", "entered_at": created.isoformat()},
            {"stage": "quote", "entered_at": (created + timedelta(days=3)).isoformat()},
        ],
        **fields,
    }


async def _counts(state: AppState, org: Org) -> tuple[int, int, int, int]:
    org_id = uuid.UUID(org.id)
    async with state.sessions() as session:
        out = []
        for model in (Deal, DealStageHistory, DealFieldHistory, AuditEntry):
            stmt = select(func.count()).select_from(model).where(col(model.org_id) == org_id)
            out.append((await session.execute(stmt.execution_options(cross_tenant=True))).scalar_one())
        return out[0], out[1], out[2], out[3]


async def test_bad_lines_are_reported_by_number_while_good_lines_land(org: Org, state: AppState) -> None:
    now = datetime.now(UTC)
    past = now - timedelta(days=40)
    _, _ = await org.add_user("rep", name="Known")
    lines = [
        _deal("ok-1", past, status="won", closed_at=(past + timedelta(days=9)).isoformat()),
        _deal("bad-stage", past, stage_history=[{"stage": "nowhere", "entered_at": past.isoformat()}]),
        _deal(
            "bad-order",
            past,
            stage_history=[
                {"stage": "prospect", "entered_at": past.isoformat()},
                {"stage": "quote", "entered_at": (past - timedelta(days=1)).isoformat()},
            ],
        ),
        _deal("future", now + timedelta(days=2)),
        _deal("bad-owner", past, owner_email="nobody@example.com"),
        _deal("closed-before-created", past, status="lost", closed_at=(past - timedelta(days=1)).isoformat()),
        _deal("ok-2", past - timedelta(days=5)),
    ]
    body = ndjson(lines[:3]) + b"\n{not json\n" + ndjson(lines[3:])
    r = await org.client.post(
        "/v1/import/deals", content=body, headers={**org.auth(), "Content-Type": "application/x-ndjson"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["lines"], report["created"], report["failed"]) == (8, 2, 6)
    reasons = {
        e["line"]: (e["external_id"], e["errors"][0]["code"] if e["errors"] else None)
        for e in report["errors"]
    }
    assert (
        reasons
        == {
            2: ("bad-stage", "unknown_stage"),
            3: ("bad-order", "out_of_order"),
            5: (None, "invalid_json"),
            6: ("future", "future_date"),
            7: ("bad-owner", "unknown_owner"),
            8: ("closed-before-created", "before_created"),
        }
        | {}
    )
    assert all(e["reason"] for e in report["errors"])

    deals = (await org.client.get("/v1/deals", headers=org.auth())).json()["data"]
    by_name = {d["name"]: d for d in deals}
    assert set(by_name) == {"Deal ok-1", "Deal ok-2"}
    won = by_name["Deal ok-1"]
    assert won["status"] == "won" and won["probability"] == "100.00"
    assert datetime.fromisoformat(won["created_at"]) == past.replace(microsecond=past.microsecond)
    assert datetime.fromisoformat(won["closed_at"]) == past + timedelta(days=9)
    history = (await org.client.get(f"/v1/deals/{won['id']}/history", headers=org.auth())).json()
    stage_times = [datetime.fromisoformat(h["at"]) for h in history if h["kind"] == "stage"]
    assert stage_times == [past, past + timedelta(days=3), past + timedelta(days=9)]
    fields = [(h["field"], h["old_value"], h["new_value"]) for h in history if h["kind"] == "field"]
    assert ("status", "open", "won") in fields and ("amount", None, "1000.00") in fields
    assert ("probability", "60", "100") in fields

    r = await org.client.get(
        "/v1/audit-log", params={"action": "import", "entity": "deal"}, headers=org.auth()
    )
    assert r.status_code == 200 and len(r.json()["data"]) == 2


async def test_importing_the_same_file_twice_changes_nothing(org: Org, state: AppState) -> None:
    past = datetime.now(UTC) - timedelta(days=20)
    deals = [_deal(f"d{i}", past - timedelta(days=i)) for i in range(4)]
    leads = [
        {
            "external_id": "l1",
            "email": "A@Example.com",
            "source": "web_form",
            "created_at": past.isoformat(),
            "converted_deal_external_id": "d1",
        },
        {
            "external_id": "l2",
            "email": "b@example.com",
            "created_at": past.isoformat(),
            "status": "working",
            "first_contacted_at": (past + timedelta(minutes=12)).isoformat(),
        },
    ]
    first = await post_import(org, "deals", deals)
    assert (first["created"], first["failed"]) == (4, 0)
    assert (await post_import(org, "leads", leads))["created"] == 2
    before = await _counts(state, org)
    again = await post_import(org, "deals", deals)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 4)
    assert (await post_import(org, "leads", leads))["unchanged"] == 2
    assert await _counts(state, org) == before

    lead_rows = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    converted = next(le for le in lead_rows if le["email"] == "a@example.com")
    assert converted["status"] == "converted" and converted["converted_deal_id"] is not None
    deal = (await org.client.get(f"/v1/deals/{converted['converted_deal_id']}", headers=org.auth())).json()
    assert deal["lead_id"] == converted["id"] and deal["name"] == "Deal d1"

    # A changed line updates the deal it made, history rewritten, nothing duplicated.
    deals[0]["amount"] = "2500.00"
    changed = await post_import(org, "deals", deals)
    assert (changed["updated"], changed["unchanged"]) == (1, 3)
    rows = (await org.client.get("/v1/deals", headers=org.auth())).json()["data"]
    assert len(rows) == 4 and {d["amount"] for d in rows if d["name"] == "Deal d0"} == {"2500.00"}


async def test_dry_run_writes_nothing_and_only_admins_import(org: Org, state: AppState) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    before = await _counts(state, org)
    report = await post_import(
        org, "deals", [_deal("x", past), _deal("y", past, pipeline="none")], dry_run="true"
    )
    assert (report["dry_run"], report["created"], report["failed"]) == (True, 1, 1)
    assert report["errors"][0]["errors"][0]["code"] == "unknown_pipeline"
    assert await _counts(state, org) == before
    _, manager_key = await org.add_user("manager")
    r = await org.client.post(
        "/v1/import/deals",
        content=ndjson([_deal("z", past)]),
        headers={**org.auth(manager_key), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    r = await org.client.post(
        "/v1/import/leads", content=b"x", headers={**org.auth(), "Content-Type": "application/xml"}
    )
    assert r.status_code == 415


async def test_lead_lines_are_validated(org: Org) -> None:
    now = datetime.now(UTC)
    lines = [
        {
            "external_id": "a",
            "created_at": (now - timedelta(days=1)).isoformat(),
            "first_contacted_at": (now - timedelta(days=2)).isoformat(),
        },
        {
            "external_id": "b",
            "created_at": (now - timedelta(days=1)).isoformat(),
            "converted_deal_external_id": "zz",
        },
        {"external_id": "c", "created_at": (now - timedelta(days=1)).isoformat(), "source": "carrier_pigeon"},
        {"external_id": "d", "created_at": (now - timedelta(days=1)).isoformat(), "source": "email"},
    ]
    report = await post_import(org, "leads", lines)
    assert report["created"] == 1
    assert [(e["line"], e["errors"][0]["code"]) for e in report["errors"]] == [
        (1, "before_created"),
        (2, "unknown_deal"),
        (3, "enum"),
    ]
