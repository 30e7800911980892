"""CSV import (mapping, dry run, per-row errors, dedupe) and erasure of personal data."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select
from sqlmodel import col

from app.db import tenant_session
from app.models.audit import AuditEntry
from app.models.intake import InboundEvent
from app.state import AppState
from tests.conftest import Org

CSV = (
    "E-Mail,Full Name,Firma,Telefon,Notes\n"
    "anna@firma.example,Anna Schmidt,Firma GmbH,030 1234567,hot\n"
    "not-an-email,Broken Row,,,\n"
    "ANNA@firma.example,Anna S.,,,second touch\n"
    ",No Contact,Nowhere,,\n"
    "ben@firma.example,Ben,,+49 30 7654321,\n"
)
MAPPING = {
    "E-Mail": "email",
    "Full Name": "name",
    "Firma": "company",
    "Telefon": "phone",
    "Notes": "attributes.notes",
}


async def post_import(org: Org, *, dry_run: bool, key: str | None = None, mapping: object = MAPPING) -> dict:  # type: ignore[type-arg]
    r = await org.client.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", CSV.encode(), "text/csv")},
        data={"mapping": json.dumps(mapping), "dry_run": str(dry_run).lower(), "default_country": "DE"},
        headers=org.auth(key),
    )
    return {"status": r.status_code, "body": r.json()}


async def test_dry_run_reports_without_writing_then_import_dedupes(org: Org) -> None:
    dry = await post_import(org, dry_run=True)
    assert dry["status"] == 200, dry
    report = dry["body"]
    assert (
        report["rows"] == 5 and report["failed"] == 2 and report["created"] == 3 and report["dry_run"] is True
    )
    assert [e["row"] for e in report["errors"]] == [2, 4]
    assert report["errors"][0]["errors"][0]["field"] == "email"
    assert (await org.client.get("/v1/leads", headers=org.auth())).json()["data"] == []
    done = (await post_import(org, dry_run=False))["body"]
    assert done["created"] == 2 and done["merged"] == 1 and done["failed"] == 2
    leads = (await org.client.get("/v1/leads?sort=created_at", headers=org.auth())).json()["data"]
    assert [x["email"] for x in leads] == ["anna@firma.example", "ben@firma.example"]
    anna = leads[0]
    assert anna["phone"] == "+49301234567" and anna["source"] == "import" and anna["touch_count"] == 2
    assert anna["attributes"] == {"notes": "hot"} and anna["name"] == "Anna Schmidt"
    again = (await post_import(org, dry_run=True))["body"]
    assert again["merged"] == 3 and again["created"] == 0


async def test_import_needs_admin_or_manager_and_a_valid_mapping(org: Org) -> None:
    _, rep_key = await org.add_user("rep")
    assert (await post_import(org, dry_run=True, key=rep_key))["status"] == 403
    _, mgr_key = await org.add_user("manager")
    assert (await post_import(org, dry_run=True, key=mgr_key))["status"] == 200
    assert (await post_import(org, dry_run=True, mapping={"E-Mail": "password"}))["status"] == 422
    assert (await post_import(org, dry_run=True, mapping=["x"]))["status"] == 422
    r = await org.client.post("/v1/leads/import", data={"dry_run": "true"}, headers=org.auth())
    assert r.status_code == 422


async def test_erase_removes_personal_data_and_keeps_counts(org: Org, state: AppState) -> None:
    source = (
        await org.client.post("/v1/intake-sources", json={"kind": "form", "name": "site"}, headers=org.auth())
    ).json()
    r = await org.client.post(
        source["endpoint"],
        json={
            "email": "gone@example.com",
            "name": "Gone Person",
            "phone": "+14155550199",
            "utm_source": "ads",
            "x": 1,
        },
    )
    lead_id = r.json()["lead_id"]
    await org.client.post(
        f"/v1/leads/{lead_id}/activities", json={"kind": "call", "body": "talked to Gone"}, headers=org.auth()
    )
    _, rep_key = await org.add_user("rep")
    assert (await org.client.post(f"/v1/leads/{lead_id}/erase", headers=org.auth(rep_key))).status_code == 403
    r = await org.client.post(f"/v1/leads/{lead_id}/erase", headers=org.auth())
    assert r.status_code == 200, r.text
    lead = r.json()
    assert lead["email"] is None and lead["name"] is None and lead["phone"] is None
    assert lead["attributes"] == {} and lead["erased_at"] is not None
    assert lead["source"] == "web_form" and lead["source_detail"]["utm"] == {"utm_source": "ads"}
    assert lead["first_contacted_at"] is not None and lead["touch_count"] == 1
    acts = (await org.client.get(f"/v1/leads/{lead_id}/activities", headers=org.auth())).json()["data"]
    assert all(a["body"] is None and a["subject"] is None for a in acts) and len(acts) == 2
    async with tenant_session(state.sessions, uuid.UUID(org.id)) as s:
        events = list(
            (
                await s.execute(select(InboundEvent).where(col(InboundEvent.lead_id) == uuid.UUID(lead_id)))
            ).scalars()
        )
        assert events and all(e.body is None and e.headers == {} for e in events)
        entry = (
            await s.execute(
                select(AuditEntry).where(
                    col(AuditEntry.entity_id) == uuid.UUID(lead_id), col(AuditEntry.action) == "erase"
                )
            )
        ).scalar_one()
        assert "gone@example.com" not in json.dumps(entry.changes)
    assert (await org.client.post(f"/v1/leads/{lead_id}/erase", headers=org.auth())).status_code == 409
    # The address can come back as a new lead.
    r = await org.client.post(source["endpoint"], json={"email": "gone@example.com"})
    assert r.status_code == 201 and r.json()["lead_id"] != lead_id
