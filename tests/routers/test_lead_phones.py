"""Phones: E.164 only for valid numbers (lead country, source default, organisation default, in
that order); anything else kept as sent in phone_raw with a note, and never deduped on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.intake import service as intake_service
from app.services.leads.ingest import Ingested, ingest_direct
from app.services.leads.normalise import LeadInput
from tests.conftest import Org

MAPPING = {"your-email": "email", "your-name": "name", "tel": "phone"}
CN_MOBILE = "138 0013 8000"


async def set_phone_country(org: Org, country: str) -> None:
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"default_phone_country": country}}, headers=org.auth()
    )
    assert r.status_code == 200, r.text
    assert r.json()["settings"]["default_phone_country"] == country


async def form_source(org: Org, **fields: Any) -> str:
    body = {"kind": "form", "name": "Contact", "field_mapping": MAPPING, **fields}
    r = await org.client.post("/v1/intake-sources", json=body, headers=org.auth())
    assert r.status_code == 201, r.text
    endpoint: str = r.json()["endpoint"]
    return endpoint


async def lead_of(org: Org, lead_id: str) -> dict[str, Any]:
    r = await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


@dataclass
class IntakePath:
    """Which way intake writes new leads in this run, and whether each try went direct."""

    mode: str
    used: list[bool] = field(default_factory=list)

    def check(self) -> None:
        """The run took the path it is named for (the direct write at least once, or never)."""
        assert (True in self.used) == (self.mode == "direct"), self.used


@pytest.fixture(params=["direct", "session"])
def intake_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> IntakePath:
    """Run a test through the direct write (`ingest_direct`: leads.direct, leads.batch), or
    force the ORM session path by having `ingest_direct` hand every post back to `ingest`."""
    path = IntakePath(mode=request.param)
    used = path.used
    real = ingest_direct

    async def recording(session: AsyncSession, data: LeadInput, **kwargs: Any) -> Ingested | None:
        if request.param == "session":
            used.append(False)
            return None
        done = await real(session, data, **kwargs)
        used.append(done is not None)
        return done

    monkeypatch.setattr(intake_service, "ingest_direct", recording)
    return path


async def test_chinese_mobile_in_a_cn_organisation_is_stored_as_e164(
    org: Org, intake_path: IntakePath
) -> None:
    await set_phone_country(org, "CN")
    endpoint = await form_source(org)
    # The first post warms the source cache, so the second is the one that may go direct.
    for name in ("王伟", "李娜"):
        r = await org.client.post(endpoint, json={"your-name": name, "tel": CN_MOBILE})
        assert r.status_code in (200, 201), r.text
        body = r.json()
        assert body["notes"] == []
        lead = await lead_of(org, body["lead_id"])
        assert lead["phone"] == "+8613800138000" and lead["phone_raw"] is None and lead["notes"] == []
    # A valid phone dedupes: the second post merged into the first lead.
    assert body["status"] == "merged"
    intake_path.check()
    r = await org.client.post("/v1/leads", json={"name": "张三", "phone": CN_MOBILE}, headers=org.auth())
    assert r.status_code == 200 and r.json()["phone"] == "+8613800138000"  # merged too


async def test_chinese_mobile_in_a_us_organisation_is_kept_raw_and_never_merged(
    org: Org, intake_path: IntakePath
) -> None:
    endpoint = await form_source(org)
    lead_ids = []
    for name in ("Wang Wei", "Li Na", "Zhang San"):
        r = await org.client.post(endpoint, json={"your-name": name, "tel": CN_MOBILE})
        assert r.status_code == 201, r.text  # created every time: nothing to merge on
        body = r.json()
        assert body["status"] == "created"
        assert [(n["field"], n["code"]) for n in body["notes"]] == [("phone", "invalid_phone")]
        assert "phone_raw" in body["notes"][0]["message"]
        lead = await lead_of(org, body["lead_id"])
        assert lead["phone"] is None and lead["phone_raw"] == CN_MOBILE
        assert lead["notes"] == body["notes"]
        lead_ids.append(body["lead_id"])
    assert len(set(lead_ids)) == 3
    intake_path.check()
    # Through the API too: kept raw, created (201), not merged with the form's leads.
    r = await org.client.post("/v1/leads", json={"name": "Zhao Liu", "phone": CN_MOBILE}, headers=org.auth())
    assert r.status_code == 201, r.text
    assert r.json()["phone"] is None and r.json()["phone_raw"] == CN_MOBILE
    assert r.json()["notes"][0]["code"] == "invalid_phone"
    r = await org.client.get("/v1/leads", params={"q": "0013"}, headers=org.auth())
    assert {lead["id"] for lead in r.json()["data"]} >= set(lead_ids)


async def test_us_number_still_normalises_in_a_us_organisation(org: Org, intake_path: IntakePath) -> None:
    endpoint = await form_source(org)
    for email in ("a@example.com", "b@example.com"):
        r = await org.client.post(endpoint, json={"your-email": email, "tel": "(415) 555-0100"})
        assert r.status_code in (200, 201), r.text
        lead = await lead_of(org, r.json()["lead_id"])
        assert lead["phone"] == "+14155550100" and lead["notes"] == []
    intake_path.check()
    r = await org.client.post("/v1/leads", json={"phone": "+1 415 555 0100"}, headers=org.auth())
    assert r.status_code == 200 and r.json()["phone"] == "+14155550100"


async def test_the_leads_country_then_the_sources_country_come_before_the_organisations(org: Org) -> None:
    r = await org.client.post(
        "/v1/leads", json={"phone": CN_MOBILE, "country": "CN", "name": "A"}, headers=org.auth()
    )
    assert r.status_code == 201 and r.json()["phone"] == "+8613800138000"
    endpoint = await form_source(org, default_country="CN")
    r = await org.client.post(endpoint, json={"tel": "139 1234 5678"})
    assert r.status_code == 201
    assert (await lead_of(org, r.json()["lead_id"]))["phone"] == "+8613912345678"
    # A number valid only in the organisation's country (US) is still found after CN fails.
    r = await org.client.post(endpoint, json={"tel": "(650) 253-0000"})
    assert (await lead_of(org, r.json()["lead_id"]))["phone"] == "+16502530000"


async def test_patch_moves_a_phone_between_raw_and_e164(org: Org) -> None:
    r = await org.client.post("/v1/leads", json={"email": "p@example.com"}, headers=org.auth())
    lead_id = r.json()["id"]
    r = await org.client.patch(f"/v1/leads/{lead_id}", json={"phone": CN_MOBILE}, headers=org.auth())
    assert r.status_code == 200, r.text
    assert r.json()["phone"] is None and r.json()["phone_raw"] == CN_MOBILE and r.json()["notes"]
    # Giving the lead its country makes the kept number valid.
    r = await org.client.patch(f"/v1/leads/{lead_id}", json={"country": "CN"}, headers=org.auth())
    assert r.json()["phone"] is None  # country alone does not re-read the phone
    r = await org.client.patch(f"/v1/leads/{lead_id}", json={"phone": CN_MOBILE}, headers=org.auth())
    assert r.json()["phone"] == "+8613800138000" and r.json()["phone_raw"] is None
    assert r.json()["notes"] == []


async def test_a_raw_phone_fills_a_merged_lead_only_when_it_has_no_phone(org: Org) -> None:
    endpoint = await form_source(org)
    first = (await org.client.post(endpoint, json={"your-email": "m@example.com"})).json()
    r = await org.client.post(endpoint, json={"your-email": "m@example.com", "tel": CN_MOBILE})
    assert r.status_code == 200 and r.json()["status"] == "merged"
    lead = await lead_of(org, first["lead_id"])
    assert lead["phone_raw"] == CN_MOBILE and lead["phone"] is None
    other = (
        await org.client.post(endpoint, json={"your-email": "n@example.com", "tel": "(415) 555-0100"})
    ).json()
    await org.client.post(endpoint, json={"your-email": "n@example.com", "tel": CN_MOBILE})
    lead = await lead_of(org, other["lead_id"])
    assert lead["phone"] == "+14155550100" and lead["phone_raw"] is None


async def test_no_email_and_a_phone_too_short_to_call_is_refused(org: Org) -> None:
    r = await org.client.post("/v1/leads", json={"phone": "12"}, headers=org.auth())
    assert r.status_code == 422
    assert [e["code"] for e in r.json()["errors"]] == ["invalid_phone"]
    endpoint = await form_source(org)
    r = await org.client.post(endpoint, json={"tel": "call me"})
    assert r.status_code == 422 and r.json()["inbound_event_id"]


async def test_erase_removes_the_raw_phone(org: Org) -> None:
    r = await org.client.post("/v1/leads", json={"phone": CN_MOBILE, "name": "X"}, headers=org.auth())
    lead_id = r.json()["id"]
    r = await org.client.post(f"/v1/leads/{lead_id}/erase", headers=org.auth())
    assert r.status_code == 200, r.text
    assert r.json()["phone_raw"] is None and r.json()["notes"] == []


async def test_import_keeps_invalid_phones_raw_and_says_which_rows(org: Org) -> None:
    csv_text = "email,phone\nu1@example.com,138 0013 8000\nu2@example.com,(415) 555-0100\n"
    r = await org.client.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", csv_text.encode(), "text/csv")},
        data={"dry_run": "false"},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["created"] == 2 and report["failed"] == 0
    assert [(n["row"], n["notes"][0]["code"]) for n in report["notes"]] == [(1, "invalid_phone")]
    leads = (await org.client.get("/v1/leads?sort=created_at", headers=org.auth())).json()["data"]
    assert [(x["phone"], x["phone_raw"]) for x in leads] == [(None, CN_MOBILE), ("+14155550100", None)]


async def test_conversion_gives_the_contact_the_number_kept_raw(org: Org) -> None:
    r = await org.client.post("/v1/leads", json={"name": "Wang Wei", "phone": CN_MOBILE}, headers=org.auth())
    r = await org.client.post(f"/v1/leads/{r.json()['id']}/convert", json={}, headers=org.auth())
    assert r.status_code in (200, 201), r.text
    assert r.json()["contact"]["phone"] == CN_MOBILE
