"""Standard Webhooks intake: signed posts, repeated ids, bad and stale signatures, secret rotation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.conftest import Org
from tests.factories import make_source


def signed(
    secret: str, payload: dict[str, Any], *, msg_id: str | None = None, at: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body.encode(), headers


async def test_signed_post_creates_a_lead_and_a_repeat_creates_nothing(org: Org) -> None:
    source = await make_source(org, "webhook", field_mapping={"contact.mail": "email"})
    assert source["secret"].startswith("whsec_")
    payload = {"contact": {"mail": "Zed@Example.com"}, "full_name": "Zed Zero", "campaign": "q4"}
    body, headers = signed(source["secret"], payload, msg_id="msg_1")
    r = await org.client.post(source["endpoint"], content=body, headers=headers)
    assert r.status_code == 201, r.text
    first = r.json()
    lead = (await org.client.get(f"/v1/leads/{first['lead_id']}", headers=org.auth())).json()
    assert lead["email"] == "zed@example.com" and lead["name"] == "Zed Zero"
    assert lead["source"] == "webhook" and lead["attributes"] == {"campaign": "q4"}
    assert lead["source_detail"]["webhook_id"] == "msg_1"
    # The provider retries: a new timestamp, the same webhook-id -> the first answer, nothing new.
    body, headers = signed(source["secret"], payload, msg_id="msg_1")
    r = await org.client.post(source["endpoint"], content=body, headers=headers)
    assert r.status_code == 201
    assert r.json()["inbound_event_id"] == first["inbound_event_id"]
    assert r.json()["lead_id"] == first["lead_id"]
    leads = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    assert len(leads) == 1 and leads[0]["touch_count"] == 1
    events = (await org.client.get("/v1/inbound-events", headers=org.auth())).json()["data"]
    assert sorted(e["status"] for e in events) == ["created", "duplicate"]


async def test_envelope_data_is_read_and_generic_aliases_map(org: Org) -> None:
    source = await make_source(org, "webhook")
    payload = {
        "type": "form.submitted",
        "timestamp": "2026-11-22T10:00:00Z",
        "data": {
            "email": "env@example.com",
            "first_name": "En",
            "last_name": "Velope",
            "company_name": "Box",
        },
    }
    body, headers = signed(source["secret"], payload)
    r = await org.client.post(source["endpoint"], content=body, headers=headers)
    assert r.status_code == 201, r.text
    lead = (await org.client.get(f"/v1/leads/{r.json()['lead_id']}", headers=org.auth())).json()
    assert lead["name"] == "En Velope" and lead["company"] == "Box"
    assert lead["source_detail"]["event_type"] == "form.submitted"


async def test_wrong_signature_stale_timestamp_and_missing_headers_are_401(org: Org) -> None:
    source = await make_source(org, "webhook")
    other_secret = (await make_source(org, "webhook"))["secret"]
    payload = {"email": "sig@example.com"}
    cases = [
        signed(other_secret, payload),
        signed(source["secret"], payload, at=datetime.now(UTC) - timedelta(minutes=10)),
        signed(source["secret"], payload, at=datetime.now(UTC) + timedelta(minutes=10)),
    ]
    body, headers = signed(source["secret"], payload)
    cases.append((body, {k: v for k, v in headers.items() if k != "webhook-signature"}))
    cases.append((body, {**headers, "webhook-signature": "v1,not-base64!!"}))
    cases.append((b'{"email": "tampered@example.com"}', headers))
    verdicts = []
    for body, headers in cases:
        r = await org.client.post(source["endpoint"], content=body, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"
        event = (
            await org.client.get(f"/v1/inbound-events/{r.json()['inbound_event_id']}", headers=org.auth())
        ).json()
        assert event["status"] == "rejected" and event["external_id"] is None
        verdicts.append(event["signature"])
    assert verdicts == ["invalid", "stale", "stale", "missing", "invalid", "invalid"]
    assert (await org.client.get("/v1/leads", headers=org.auth())).json()["data"] == []
    # The secret itself is never stored on the event.
    listed = (await org.client.get("/v1/inbound-events", headers=org.auth())).text
    assert source["secret"] not in listed
    # A rejected signature is not replayable.
    r = await org.client.post(
        f"/v1/inbound-events/{json.loads(listed)['data'][0]['id']}/replay", headers=org.auth()
    )
    assert r.status_code == 409


async def test_a_bad_post_does_not_block_the_real_webhook_id(org: Org) -> None:
    source = await make_source(org, "webhook")
    other_secret = (await make_source(org, "webhook"))["secret"]
    body, headers = signed(other_secret, {"email": "block@example.com"}, msg_id="msg_same")
    assert (await org.client.post(source["endpoint"], content=body, headers=headers)).status_code == 401
    body, headers = signed(source["secret"], {"email": "block@example.com"}, msg_id="msg_same")
    r = await org.client.post(source["endpoint"], content=body, headers=headers)
    assert r.status_code == 201 and r.json()["status"] == "created"


async def test_rotation_keeps_the_previous_secret_for_the_grace_period(org: Org) -> None:
    source = await make_source(org, "webhook")
    old = source["secret"]
    r = await org.client.post(
        f"/v1/intake-sources/{source['id']}/rotate-secret", json={"grace_hours": 1}, headers=org.auth()
    )
    assert r.status_code == 200
    new = r.json()["secret"]
    assert new != old and r.json()["previous_secret_expires_at"] is not None
    for i, secret in enumerate((old, new)):
        body, headers = signed(secret, {"email": f"rot{i}@example.com"})
        assert (await org.client.post(source["endpoint"], content=body, headers=headers)).status_code == 201
    # Both signatures at once (the sender mid-rotation) also verify.
    body, headers = signed(new, {"email": "both@example.com"})
    headers["webhook-signature"] = f"{signed(old, {})[1]['webhook-signature']} {headers['webhook-signature']}"
    assert (await org.client.post(source["endpoint"], content=body, headers=headers)).status_code == 201
    r = await org.client.post(
        f"/v1/intake-sources/{source['id']}/rotate-secret", json={"grace_hours": 0}, headers=org.auth()
    )
    body, headers = signed(new, {"email": "late@example.com"})
    assert (await org.client.post(source["endpoint"], content=body, headers=headers)).status_code == 401
    form = (
        await org.client.post("/v1/intake-sources", json={"kind": "form", "name": "f"}, headers=org.auth())
    ).json()
    r = await org.client.post(f"/v1/intake-sources/{form['id']}/rotate-secret", headers=org.auth())
    assert r.status_code == 422


async def test_non_json_webhook_is_415_and_malformed_json_400(org: Org) -> None:
    source = await make_source(org, "webhook")
    body, headers = signed(source["secret"], {"email": "x@example.com"})
    r = await org.client.post(
        source["endpoint"], content=body, headers={**headers, "content-type": "text/plain"}
    )
    assert r.status_code == 415
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    raw = '{"email": '
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(source["secret"]).sign(msg_id, at, raw),
        "content-type": "application/json",
    }
    r = await org.client.post(source["endpoint"], content=raw.encode(), headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


async def test_a_rolled_back_repeat_does_not_poison_the_source_cache(org: Org) -> None:
    from app.services import cache as intake_cache

    source = await make_source(org, "webhook")
    body, headers = signed(source["secret"], {"email": "first@example.com"}, msg_id="msg_cache")
    assert (await org.client.post(source["endpoint"], content=body, headers=headers)).status_code == 201
    intake_cache.forget_source(source["key"])
    # The repeat loads the source afresh, then rolls its transaction back.
    assert (await org.client.post(source["endpoint"], content=body, headers=headers)).status_code == 201
    body, headers = signed(source["secret"], {"email": "second@example.com"})
    r = await org.client.post(source["endpoint"], content=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "created"


async def test_simultaneous_deliveries_of_one_webhook_id_make_one_lead(org: Org) -> None:
    import asyncio

    source = await make_source(org, "webhook")
    deliveries = [
        signed(source["secret"], {"email": "race@example.com"}, msg_id="msg_race") for _ in range(4)
    ]
    answers = await asyncio.gather(
        *[org.client.post(source["endpoint"], content=body, headers=headers) for body, headers in deliveries]
    )
    assert [a.status_code for a in answers] == [201] * 4
    assert len({a.json()["lead_id"] for a in answers}) == 1
    assert len({a.json()["inbound_event_id"] for a in answers}) == 1
    leads = (await org.client.get("/v1/leads", headers=org.auth())).json()["data"]
    assert len(leads) == 1 and leads[0]["touch_count"] == 1
    events = (await org.client.get("/v1/inbound-events", headers=org.auth())).json()["data"]
    assert sorted(e["status"] for e in events) == ["created", "duplicate", "duplicate", "duplicate"]
