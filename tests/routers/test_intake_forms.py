"""Web-form intake: JSON, urlencoded (303) and multipart posts, honeypot, CORS, 4xx recorded, replay."""

from __future__ import annotations

from typing import Any

import httpx

from app.config import Settings
from app.main import create_app
from app.state import AppState
from tests.conftest import Org, make_org
from tests.factories import lead_of, make_source

MAPPING = {"your-email": "email", "your-name": "name", "org": "company", "tel": "phone"}


async def event_of(org: Org, event_id: str) -> dict[str, Any]:
    r = await org.client.get(f"/v1/inbound-events/{event_id}?include_body=true", headers=org.auth())
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_json_post_creates_a_mapped_lead_with_utm_and_attributes(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING, tags=["web"], default_country="GB")
    assert source["endpoint"] == f"/v1/intake/forms/{source['key']}" and source["secret"] is None
    r = await org.client.post(
        source["endpoint"],
        json={
            "your-email": "Ada@Example.com",
            "your-name": "Ada Lovelace",
            "org": "Analytical Engines",
            "tel": "020 7946 0958",
            "utm_source": "google",
            "utm_campaign": "launch",
            "page_url": "https://example.com/pricing",
            "budget": "10k",
        },
    )
    assert r.status_code == 201, r.text
    result = r.json()
    assert result["status"] == "created"
    lead = await lead_of(org, result["lead_id"])
    assert lead["email"] == "ada@example.com" and lead["name"] == "Ada Lovelace"
    assert lead["company"] == "Analytical Engines"
    assert lead["phone"] == "+442079460958"
    assert lead["source"] == "web_form" and lead["source_id"] == source["id"]
    assert lead["source_detail"]["utm"] == {"utm_source": "google", "utm_campaign": "launch"}
    assert lead["source_detail"]["page_url"] == "https://example.com/pricing"
    assert lead["attributes"] == {"budget": "10k"}
    assert lead["tags"] == ["web"]
    event = await event_of(org, result["inbound_event_id"])
    assert event["status"] == "created" and event["lead_id"] == lead["id"]
    assert '"budget":"10k"' in event["body"]
    assert event["headers"]["content-type"] == "application/json"


async def test_plain_html_post_is_redirected_with_303(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING, redirect_url="https://example.com/thanks")
    r = await org.client.post(
        source["endpoint"],
        content="your-email=bob%40example.com&your-name=Bob+Builder&utm_medium=cpc&extra=1",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "https://example.com/thanks"
    leads = (await org.client.get("/v1/leads?q=bob@example.com", headers=org.auth())).json()["data"]
    assert len(leads) == 1
    assert leads[0]["name"] == "Bob Builder" and leads[0]["attributes"] == {"extra": "1"}
    assert leads[0]["source_detail"]["utm"] == {"utm_medium": "cpc"}
    # The same form asking for JSON gets JSON.
    r = await org.client.post(
        source["endpoint"],
        data={"your-email": "carol@example.com"},
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 201 and r.json()["status"] == "created"


async def test_multipart_post_creates_a_lead(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    r = await org.client.post(
        source["endpoint"],
        data={"your-email": "dan@example.com", "your-name": "Dan", "utm_source": "newsletter", "size": "50"},
        files={"cv": ("cv.txt", b"hello", "text/plain")},
    )
    assert r.status_code == 201, r.text
    lead = await lead_of(org, r.json()["lead_id"])
    assert lead["email"] == "dan@example.com" and lead["name"] == "Dan"
    assert lead["attributes"]["size"] == "50"
    assert lead["attributes"]["_files"] == [
        {"field": "cv", "filename": "cv.txt", "content_type": "text/plain"}
    ]
    assert lead["source_detail"]["utm"] == {"utm_source": "newsletter"}


async def test_filled_honeypot_is_accepted_silently_and_marked_spam(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING, honeypot_field="website")
    r = await org.client.post(
        source["endpoint"], json={"your-email": "bot@spam.example", "website": "http://x"}
    )
    assert r.status_code == 202
    assert r.json()["status"] == "spam" and r.json()["lead_id"] is None
    assert (await org.client.get("/v1/leads", headers=org.auth())).json()["data"] == []
    event = await event_of(org, r.json()["inbound_event_id"])
    assert event["status"] == "spam"
    # An empty honeypot is a person.
    r = await org.client.post(source["endpoint"], json={"your-email": "human@example.com", "website": ""})
    assert r.status_code == 201
    lead = await lead_of(org, r.json()["lead_id"])
    assert "website" not in lead["attributes"]


async def test_bad_requests_get_problem_json_and_are_recorded(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    url = source["endpoint"]
    cases = [
        (dict(content=b'{"your-email": ', headers={"Content-Type": "application/json"}), 400, "bad_request"),
        (dict(content=b"<xml/>", headers={"Content-Type": "application/xml"}), 415, "unsupported_media_type"),
        (dict(json=["not", "an", "object"]), 400, "bad_request"),
        (dict(json={"your-name": "No Contact"}), 422, "validation_error"),
        (dict(json={"your-email": "not-an-email"}), 422, "validation_error"),
    ]
    for kwargs, status, code in cases:
        r = await org.client.post(url, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == code and body["detail"]
        event = await event_of(org, body["inbound_event_id"])
        assert event["status"] == "rejected" and event["http_status"] == status and event["reason"]
    r = await org.client.post("/v1/intake/forms/no-such-key", json={"email": "a@b.example"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    events = (await org.client.get("/v1/inbound-events?status=rejected", headers=org.auth())).json()["data"]
    assert len(events) == len(cases)
    assert (await org.client.get("/v1/leads", headers=org.auth())).json()["data"] == []


async def test_oversize_body_is_413_and_recorded_without_body(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    big = b'{"your-email": "big@example.com", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = await org.client.post(source["endpoint"], content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    event = await event_of(org, r.json()["inbound_event_id"])
    assert event["status"] == "rejected" and event["body"] is None
    assert event["body_size"] == len(big)

    async def stream() -> Any:
        for _ in range(3):
            yield b"x" * (512 * 1024)

    r = await org.client.post(
        source["endpoint"], content=stream(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    event = await event_of(org, r.json()["inbound_event_id"])
    assert event["status"] == "rejected" and event["body"] is None


async def test_unknown_field_is_kept_and_replayed_after_fixing_the_mapping(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    r = await org.client.post(source["endpoint"], json={"correo": "eva@example.com", "nombre": "Eva"})
    assert r.status_code == 422
    assert "correo" in r.json()["detail"]
    event_id = r.json()["inbound_event_id"]
    r = await org.client.post(f"/v1/inbound-events/{event_id}/replay", headers=org.auth())
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["replays"] == 1
    r = await org.client.patch(
        f"/v1/intake-sources/{source['id']}",
        json={"field_mapping": {**MAPPING, "correo": "email", "nombre": "name"}},
        headers=org.auth(),
    )
    assert r.status_code == 200
    r = await org.client.post(f"/v1/inbound-events/{event_id}/replay", headers=org.auth())
    assert r.status_code == 200, r.text
    replayed = r.json()
    assert replayed["status"] == "created" and replayed["replays"] == 2
    lead = await lead_of(org, replayed["lead_id"])
    assert lead["email"] == "eva@example.com" and lead["name"] == "Eva"
    r = await org.client.post(f"/v1/inbound-events/{event_id}/replay", headers=org.auth())
    assert r.status_code == 409


async def test_cors_preflight_and_origin_check(org: Org) -> None:
    source = await make_source(
        org, "form", field_mapping=MAPPING, allowed_origins=["https://www.example.com"]
    )
    url = source["endpoint"]
    r = await org.client.options(
        url,
        headers={
            "Origin": "https://www.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://www.example.com"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "content-type"
    r = await org.client.options(url, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = await org.client.post(
        url, json={"your-email": "x@example.com"}, headers={"Origin": "https://www.example.com"}
    )
    assert r.status_code == 201 and r.headers["access-control-allow-origin"] == "https://www.example.com"
    r = await org.client.post(
        url, json={"your-email": "y@example.com"}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert (await event_of(org, r.json()["inbound_event_id"]))["status"] == "rejected"


async def test_form_touch_merges_and_phone_formats_match(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    r1 = await org.client.post(source["endpoint"], json={"tel": "(415) 555-0100", "your-name": "Pat"})
    r2 = await org.client.post(source["endpoint"], json={"tel": "+1 415 555 0100", "org": "Acme"})
    assert r1.status_code == 201 and r2.status_code == 200
    assert r2.json()["status"] == "merged" and r2.json()["lead_id"] == r1.json()["lead_id"]
    lead = await lead_of(org, r1.json()["lead_id"])
    assert lead["company"] == "Acme" and lead["name"] == "Pat" and lead["touch_count"] == 2
    acts = (await org.client.get(f"/v1/leads/{lead['id']}/activities", headers=org.auth())).json()["data"]
    assert len(acts) == 2 and all(a["direction"] == "inbound" for a in acts)


async def test_rate_limit_per_source(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING, rate_limit_per_minute=2)
    answers = [
        await org.client.post(source["endpoint"], json={"your-email": f"r{i}@example.com"}) for i in range(3)
    ]
    assert [a.status_code for a in answers[:2]] == [201, 201]
    limited = answers[2]
    assert limited.status_code == 429 and limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    leads = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    assert len(leads) == 2


async def test_retired_or_inactive_source_is_404(org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    r = await org.client.patch(
        f"/v1/intake-sources/{source['id']}", json={"active": False}, headers=org.auth()
    )
    assert r.status_code == 200
    assert (
        await org.client.post(source["endpoint"], json={"your-email": "a@example.com"})
    ).status_code == 404
    r = await org.client.delete(f"/v1/intake-sources/{source['id']}", headers=org.auth())
    assert r.status_code == 200
    assert (await org.client.get(f"/v1/intake-sources/{source['id']}", headers=org.auth())).status_code == 404


async def test_sources_and_events_are_admin_or_manager_and_tenant_scoped(org: Org, other_org: Org) -> None:
    source = await make_source(org, "form", field_mapping=MAPPING)
    r = await org.client.post(source["endpoint"], json={"your-email": "iso@example.com"})
    event_id = r.json()["inbound_event_id"]
    _, rep_key = await org.add_user("rep")
    _, mgr_key = await org.add_user("manager")
    _, viewer_key = await org.add_user("viewer")
    for key in (rep_key, viewer_key):
        assert (await org.client.get("/v1/intake-sources", headers=org.auth(key))).status_code == 403
        assert (await org.client.get("/v1/inbound-events", headers=org.auth(key))).status_code == 403
    r = await org.client.post(
        "/v1/intake-sources", json={"kind": "form", "name": "x"}, headers=org.auth(rep_key)
    )
    assert r.status_code == 403
    assert (await org.client.get("/v1/intake-sources", headers=org.auth(mgr_key))).status_code == 200
    r = await org.client.post(
        "/v1/intake-sources", json={"kind": "form", "name": "x"}, headers=org.auth(mgr_key)
    )
    assert r.status_code == 403
    r = await org.client.post(f"/v1/inbound-events/{event_id}/replay", headers=org.auth(mgr_key))
    assert r.status_code == 403
    other: httpx.AsyncClient = other_org.client
    assert (
        await other.get(f"/v1/intake-sources/{source['id']}", headers=other_org.auth())
    ).status_code == 404
    assert (await other.get(f"/v1/inbound-events/{event_id}", headers=other_org.auth())).status_code == 404
    assert (await other.get("/v1/inbound-events", headers=other_org.auth())).json()["data"] == []
    assert (await other.get("/v1/intake-sources", headers=other_org.auth())).json()["data"] == []
    r = await other.post(f"/v1/inbound-events/{event_id}/replay", headers=other_org.auth())
    assert r.status_code == 404


async def test_source_validation(org: Org) -> None:
    bad = [
        {"kind": "form", "name": "x", "field_mapping": {"a": "nope"}},
        {"kind": "form", "name": "x", "allowed_origins": ["example.com"]},
        {"kind": "email", "name": "x"},
        {"kind": "form", "name": "x", "provider": "mailgun"},
        {"kind": "fax", "name": "x"},
        {"kind": "form", "name": "x", "redirect_url": "javascript:alert(1)"},
    ]
    for body in bad:
        r = await org.client.post("/v1/intake-sources", json=body, headers=org.auth())
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] == "validation_error" and r.json()["errors"]
    assert (await org.client.get("/v1/intake-sources", headers=org.auth())).json()["data"] == []


async def test_app_wide_cors_leaves_forms_to_their_source(settings: Settings) -> None:
    """With LOUDOU_CORS_ORIGINS set for the API's own frontend, a form's preflight and post from
    the site its source allows are still answered by the source's rule, and the app's list
    still governs the rest of the API."""
    own = settings.model_copy(update={"cors_origins": ["https://app.example"]})
    state = AppState.open(own)
    try:
        app = create_app(own, state=state)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            org = await make_org(state, client)
            source = await make_source(
                org, "form", field_mapping=MAPPING, allowed_origins=["https://shop.example"]
            )
            preflight = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            }
            r = await client.options(
                source["endpoint"], headers={"Origin": "https://shop.example", **preflight}
            )
            assert r.status_code == 204
            assert r.headers["access-control-allow-origin"] == "https://shop.example"
            r = await client.options(
                source["endpoint"], headers={"Origin": "https://app.example", **preflight}
            )
            assert r.status_code == 403  # the form's source does not allow the app's own origin
            r = await client.post(
                source["endpoint"],
                json={"your-email": "cors@example.com"},
                headers={"Origin": "https://shop.example"},
            )
            assert r.status_code == 201 and r.headers["access-control-allow-origin"] == "https://shop.example"
            r = await client.options("/v1/leads", headers={"Origin": "https://app.example", **preflight})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
            r = await client.options("/v1/leads", headers={"Origin": "https://shop.example", **preflight})
            assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    finally:
        await state.close()
