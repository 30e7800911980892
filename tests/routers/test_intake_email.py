"""Email intake: SendGrid, Mailgun (signed), Postmark (Basic auth), raw MIME; threading; limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

from tests.conftest import Org
from tests.factories import lead_of, make_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "emails"
MAILGUN_KEY = "key-" + "a1" * 16


def fixture(name: str) -> Any:
    path = FIXTURES / name
    return json.loads(path.read_text()) if name.endswith(".json") else path.read_bytes()


async def timeline(org: Org, lead_id: str) -> list[dict[str, Any]]:
    r = await org.client.get(f"/v1/leads/{lead_id}/activities", headers=org.auth())
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def mailgun_signed(fields: dict[str, str], *, key: str = MAILGUN_KEY, age: int = 0) -> dict[str, str]:
    timestamp = str(int(time.time()) - age)
    token = secrets.token_hex(25)
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {**fields, "timestamp": timestamp, "token": token, "signature": signature}


async def test_sendgrid_parsed_post_creates_a_lead_with_signature_phone(org: Org) -> None:
    source = await make_source(org, "email", provider="sendgrid")
    r = await org.client.post(
        source["endpoint"], data=fixture("sendgrid_parsed.json"), files={"x": ("", b"")}
    )
    assert r.status_code == 201, r.text
    lead = await lead_of(org, r.json()["lead_id"])
    assert lead["name"] == "Maria Garcia"
    assert lead["email"] == "maria.garcia@northwind-logistics.com"
    assert lead["phone"] == "+4989210940"
    assert lead["source"] == "email" and lead["source_detail"]["subject"] == "Pricing for 40 seats"
    assert "40 seats" in lead["message"] and "Tel:" not in lead["message"]
    acts = await timeline(org, lead["id"])
    assert acts[0]["kind"] == "email" and acts[0]["subject"] == "Pricing for 40 seats"


async def test_sendgrid_raw_mode_of_two_mib_is_accepted(org: Org) -> None:
    source = await make_source(org, "email", provider="sendgrid")
    form = fixture("sendgrid_raw.json")
    padding = "\n\n" + ("x" * 76 + "\n") * (2 * 1024 * 1024 // 77)
    form["email"] = form["email"].replace("In-Reply-To:", "X-Pad: 1\nIn-Reply-To:") + padding
    r = await org.client.post(source["endpoint"], data=form, files={"x": ("", b"")})
    assert r.status_code == 201, r.text[:500]
    assert (await lead_of(org, r.json()["lead_id"]))["email"] == "john.smith@acme-robotics.com"


async def test_mailgun_with_valid_signature_creates_a_lead_and_bad_ones_are_401(org: Org) -> None:
    source = await make_source(org, "email", provider="mailgun", signing_key=MAILGUN_KEY)
    assert source["signing_key_set"] is True and "signing_key" not in source
    fields = {
        k: v for k, v in fixture("mailgun_route.json").items() if k not in ("timestamp", "token", "signature")
    }
    for bad in (mailgun_signed(fields, key="key-wrong"), mailgun_signed(fields, age=3600)):
        r = await org.client.post(source["endpoint"], data=bad)
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert (await org.client.get("/v1/leads", headers=org.auth())).json()["data"] == []
    good = mailgun_signed(fields)
    r = await org.client.post(source["endpoint"], data=good)
    assert r.status_code == 201, r.text
    lead = await lead_of(org, r.json()["lead_id"])
    assert lead["name"] == "Priya Raman" and lead["email"] == "priya@lumen-analytics.co.uk"
    assert lead["phone"] == "+442079460123"
    assert lead["message"].startswith("Hi Tom,") and "From: Tom Becker" not in lead["message"]
    # The same token again is a replay: refused.
    r = await org.client.post(source["endpoint"], data=good)
    assert r.status_code == 401 and "already used" in r.json()["detail"]
    events = (await org.client.get("/v1/inbound-events", headers=org.auth())).json()["data"]
    assert sorted(e["signature"] for e in events) == ["invalid", "replayed", "stale", "valid"]
    assert MAILGUN_KEY not in json.dumps(events)


async def test_postmark_with_basic_auth(org: Org) -> None:
    source = await make_source(
        org, "email", provider="postmark", basic_auth_username="pm", basic_auth_password="s3cret-pw"
    )
    payload = fixture("postmark_inbound.json")
    wrong = "Basic " + base64.b64encode(b"pm:nope").decode()
    r = await org.client.post(source["endpoint"], json=payload, headers={"Authorization": wrong})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    r = await org.client.post(source["endpoint"], json=payload)
    assert r.status_code == 401
    right = "Basic " + base64.b64encode(b"pm:s3cret-pw").decode()
    r = await org.client.post(source["endpoint"], json=payload, headers={"Authorization": right})
    assert r.status_code == 201, r.text
    lead = await lead_of(org, r.json()["lead_id"])
    assert lead["name"] == "Daniel O'Brien" and lead["email"] == "daniel@harborfreight-analytics.com"
    assert lead["phone"] == "+13125550147"
    assert "walk us through the API" in lead["message"] and "booth" not in lead["message"]
    # Postmark retries the same message: the first result, nothing new.
    r = await org.client.post(source["endpoint"], json=payload, headers={"Authorization": right})
    assert r.status_code == 200 and r.json()["lead_id"] == lead["id"]
    assert len((await org.client.get("/v1/leads", headers=org.auth())).json()["data"]) == 1


async def test_raw_mime_then_a_reply_lands_on_the_same_lead(org: Org) -> None:
    source = await make_source(org, "email", provider="mime")
    r = await org.client.post(
        source["endpoint"], content=fixture("signature.eml"), headers={"Content-Type": "message/rfc822"}
    )
    assert r.status_code == 201, r.text
    lead = await lead_of(org, r.json()["lead_id"])
    assert lead["name"] == "John Smith" and lead["email"] == "john.smith@acme-robotics.com"
    assert lead["phone"] == "+14155550100" and lead["company"] == "Acme Robotics Ltd"
    assert lead["source_detail"]["subject"] == "Quote request: 20 pick-and-place arms"
    r = await org.client.post(
        source["endpoint"], content=fixture("reply.eml"), headers={"Content-Type": "message/rfc822"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "activity" and r.json()["lead_id"] == lead["id"]
    acts = await timeline(org, lead["id"])
    assert len(acts) == 2
    reply = acts[0]
    assert reply["subject"].startswith("Re: Quote request")
    assert reply["body"].startswith("Hi Anna,") and "Thank you for your enquiry" not in reply["body"]
    assert reply["details"]["quoted_text"]
    assert (await lead_of(org, lead["id"]))["touch_count"] == 2


async def test_reply_to_an_outbound_email_logged_on_a_lead_threads_onto_it(org: Org) -> None:
    r = await org.client.post("/v1/leads", json={"email": "someone@else.example"}, headers=org.auth())
    lead_id = r.json()["id"]
    r = await org.client.post(
        f"/v1/leads/{lead_id}/activities",
        json={"kind": "email", "message_id": "<0f3c9a52-6a1e-4d7b-9a63-2d1f5e0b7c11@mail.loudou.example>"},
        headers=org.auth(),
    )
    assert r.status_code == 201 and r.json()["message_id"].startswith("0f3c9a52")
    source = await make_source(org, "email", provider="mime")
    r = await org.client.post(
        source["endpoint"], content=fixture("reply.eml"), headers={"Content-Type": "message/rfc822"}
    )
    assert r.json()["status"] == "activity" and r.json()["lead_id"] == lead_id


async def test_form_then_email_from_the_same_address_is_one_lead_with_two_touches(org: Org) -> None:
    form = (
        await org.client.post("/v1/intake-sources", json={"kind": "form", "name": "site"}, headers=org.auth())
    ).json()
    r = await org.client.post(
        form["endpoint"], json={"email": "John.Smith@acme-robotics.com", "name": "John"}
    )
    assert r.status_code == 201
    lead_id = r.json()["lead_id"]
    source = await make_source(org, "email", provider="mime")
    r = await org.client.post(
        source["endpoint"], content=fixture("signature.eml"), headers={"Content-Type": "message/rfc822"}
    )
    assert r.status_code == 200 and r.json()["status"] == "merged" and r.json()["lead_id"] == lead_id
    lead = await lead_of(org, lead_id)
    assert lead["touch_count"] == 2 and lead["phone"] == "+14155550100" and lead["name"] == "John"
    kinds = sorted(a["kind"] for a in await timeline(org, lead_id))
    assert kinds == ["email", "note"]


async def test_bad_email_posts_are_recorded_and_replayable(org: Org) -> None:
    source = await make_source(org, "email", provider="mime")
    r = await org.client.post(
        source["endpoint"], content=b"hello", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    event_id = r.json()["inbound_event_id"]
    event = (await org.client.get(f"/v1/inbound-events/{event_id}", headers=org.auth())).json()
    assert event["status"] == "rejected" and event["kind"] == "email"
    r = await org.client.post(f"/v1/inbound-events/{event_id}/replay", headers=org.auth())
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    pm = await make_source(org, "email", provider="postmark")
    r = await org.client.post(pm["endpoint"], json={"nothing": "here"})
    assert r.status_code == 422
    sg = await make_source(org, "email", provider="sendgrid")
    r = await org.client.post(sg["endpoint"], json={"from": "x"})
    assert r.status_code == 422


async def test_email_over_the_email_limit_is_413_and_recorded(org: Org) -> None:
    source = await make_source(org, "email", provider="mime")

    async def stream() -> Any:
        chunk = b"x" * (1024 * 1024)
        for _ in range(26):
            yield chunk

    r = await org.client.post(
        source["endpoint"], content=stream(), headers={"Content-Type": "message/rfc822"}
    )
    assert r.status_code == 413
    event = (
        await org.client.get(
            f"/v1/inbound-events/{r.json()['inbound_event_id']}?include_body=true", headers=org.auth()
        )
    ).json()
    assert event["status"] == "rejected" and event["body"] is None
