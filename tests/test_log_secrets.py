"""Logs hold no secrets: every auth path (API key, JWT login and use, intake source keys,
Standard Webhooks signatures, provider basic auth and signing keys on inbound email, outbound
webhook secrets, passwords) and every intake kind is driven, right and wrong, with the app's own
structured logging (JSON, access log on, DEBUG); none of the secret values appears in what was
logged, nor any credential derived from them (base64 basic auth, signatures)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import structlog
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.logging import configure_logging
from app.main import create_app
from app.state import AppState
from tests.conftest import ADMIN_PASSWORD, Org, wait_for
from tests.factories import make_source
from tests.faults.receiver import Receiver
from tests.routers.test_intake_email import MAILGUN_KEY, fixture, mailgun_signed

secrets_rng = random.SystemRandom()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The app's structured logging (JSON lines, DEBUG) written into a buffer, restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("DEBUG", "json")
    # Module-level loggers must not keep this configuration after the test (structlog caches a
    # logger's configuration on its first use otherwise).
    structlog.configure(cache_logger_on_first_use=False)
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers, root.level = handlers, level
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    structlog.reset_defaults()


async def test_no_secret_reaches_the_logs(
    org: Org, settings: Settings, state: AppState, worker: None, json_logs: io.StringIO
) -> None:
    secrets: dict[str, str] = {"admin api key": org.admin_key, "admin password": ADMIN_PASSWORD}
    # A client address of this test's own: the login guard counts failures per address.
    address = f"10.{secrets_rng.randrange(256)}.{secrets_rng.randrange(256)}.{secrets_rng.randrange(1, 255)}"
    transport = httpx.ASGITransport(app=create_app(settings, state=state), client=(address, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await drive_everything(org, client, secrets, json_logs)


async def drive_everything(
    org: Org, client: httpx.AsyncClient, secrets: dict[str, str], json_logs: io.StringIO
) -> None:
    """Every auth path and intake kind, right and wrong; then the captured logs are searched."""

    # API key, right and wrong; a key in a query string is not how keys travel, but is logged-proof too.
    assert (await client.get("/v1/me", headers=org.auth())).status_code == 200
    wrong_key = "ldk_" + uuid.uuid4().hex + "wrongkey"
    secrets["wrong api key"] = wrong_key
    assert (await client.get("/v1/me", headers=org.auth(wrong_key))).status_code == 401

    # Passwords: a user with one, a change, a login (JWT) and its use, a failed login.
    email = f"pw-{uuid.uuid4().hex[:6]}@example.com"
    first_password, new_password = "first-" + uuid.uuid4().hex, "second-" + uuid.uuid4().hex
    secrets |= {"user password": first_password, "new password": new_password}
    r = await client.post(
        "/v1/users", json={"email": email, "role": "rep", "password": first_password}, headers=org.auth()
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    r = await client.post(
        f"/v1/users/{user_id}/password", json={"new_password": new_password}, headers=org.auth()
    )
    assert r.status_code in (200, 204), r.text
    r = await client.post("/v1/auth/token", json={"email": email, "password": new_password})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    secrets["jwt"] = token
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    wrong_password = "wrong-" + uuid.uuid4().hex
    secrets["wrong password"] = wrong_password
    r = await client.post("/v1/auth/token", json={"email": email, "password": wrong_password})
    assert r.status_code == 401
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    secrets["tampered jwt"] = tampered
    assert (await client.get("/v1/me", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401

    # A new API key (shown once).
    r = await client.post("/v1/api-keys", json={"name": "ci", "user_id": user_id}, headers=org.auth())
    assert r.status_code == 201
    secrets["new api key"] = r.json()["key"]

    # Web form: the source's key is in its URL.
    form = await make_source(org, "form")
    secrets["form key"] = form["key"]
    assert (await client.post(form["endpoint"], json={"email": "f1@example.com"})).status_code == 201
    r = await client.post(form["endpoint"], data={"email": "f2@example.com"}, files={"x": ("a.txt", b"1")})
    assert r.status_code in (201, 303), r.text
    assert (await client.post(form["endpoint"], json={"name": "no contact"})).status_code == 422

    # Standard Webhooks intake: signed right, signed wrong, and the secret rotated.
    hook = await make_source(org, "webhook")
    secrets |= {"webhook source key": hook["key"], "webhook source secret": hook["secret"]}
    body = json.dumps({"email": "w1@example.com"})
    msg_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    signature = Webhook(hook["secret"]).sign(msg_id, at, body)
    secrets["webhook signature"] = signature.split(",", 1)[1]
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    assert (await client.post(hook["endpoint"], content=body, headers=headers)).status_code == 201
    bad = {**headers, "webhook-id": f"msg_{uuid.uuid4().hex}", "webhook-signature": "v1,Zm9vYmFy" + "x" * 30}
    assert (await client.post(hook["endpoint"], content=body, headers=bad)).status_code == 401
    r = await client.post(f"/v1/intake-sources/{hook['id']}/rotate-secret", headers=org.auth())
    assert r.status_code == 200, r.text
    secrets["rotated webhook secret"] = r.json()["secret"]

    # Inbound email: provider basic auth (Postmark), a Mailgun signing key, raw MIME.
    postmark_password = "pm-" + uuid.uuid4().hex
    postmark = await make_source(
        org,
        "email",
        provider="postmark",
        basic_auth_username="pm-user",
        basic_auth_password=postmark_password,
    )
    basic = base64.b64encode(f"pm-user:{postmark_password}".encode()).decode()
    wrong_basic = base64.b64encode(b"pm-user:not-it").decode()
    secrets |= {
        "email source key": postmark["key"],
        "basic auth password": postmark_password,
        "basic auth header": basic,
        "wrong basic auth header": wrong_basic,
    }
    payload = fixture("postmark_inbound.json")
    r = await client.post(postmark["endpoint"], json=payload, headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 201, r.text
    r = await client.post(
        postmark["endpoint"], json=payload, headers={"Authorization": f"Basic {wrong_basic}"}
    )
    assert r.status_code == 401
    mailgun = await make_source(org, "email", provider="mailgun", signing_key=MAILGUN_KEY)
    secrets |= {"mailgun source key": mailgun["key"], "mailgun signing key": MAILGUN_KEY}
    fields = {
        k: v for k, v in fixture("mailgun_route.json").items() if k not in ("timestamp", "token", "signature")
    }
    signed = mailgun_signed(fields)
    secrets["mailgun signature"] = signed["signature"]
    assert (await client.post(mailgun["endpoint"], data=signed)).status_code == 201
    assert (
        await client.post(mailgun["endpoint"], data=mailgun_signed(fields, key="key-wrong"))
    ).status_code == 401
    mime = await make_source(org, "email", provider="mime")
    secrets["mime source key"] = mime["key"]
    r = await client.post(
        mime["endpoint"], content=fixture("signature.eml"), headers={"Content-Type": "message/rfc822"}
    )
    assert r.status_code == 201, r.text

    # Outbound webhooks: a subscription's signing secret, used on a real delivery by the worker.
    receiver = Receiver({"/in": 0.0})
    await asyncio.to_thread(receiver.start)
    try:
        url_token = "tok" + uuid.uuid4().hex  # target URLs often carry a secret of their own
        secrets["webhook url token"] = url_token
        r = await client.post(
            "/v1/webhook-subscriptions",
            json={"url": receiver.url("/in") + f"?token={url_token}", "event_types": ["lead.created"]},
            headers=org.auth(),
        )
        assert r.status_code == 201, r.text
        secrets["webhook target secret"] = r.json()["secret"]
        assert (
            await client.post("/v1/leads", json={"email": "out@example.com"}, headers=org.auth())
        ).status_code == 201

        async def delivered() -> bool:
            return bool(receiver.received["/in"])

        await wait_for(delivered, timeout=30)
        sent = receiver.received["/in"][0]
    finally:
        await asyncio.to_thread(receiver.stop)
    assert sent.signature.startswith("v1,")
    secrets["outbound webhook signature"] = sent.signature.split(",", 1)[1]

    logged = json_logs.getvalue()
    lines = [line for line in logged.splitlines() if line.strip()]
    assert len(lines) > 20, "the logs were not captured"
    assert any('"logger": "loudou.access"' in line for line in lines), logged[:3000]
    leaked = {name: value for name, value in secrets.items() if value and value in logged}
    assert not leaked, [line[:400] for line in lines if any(v in line for v in leaked.values())][:5]
    # Secret parts that are long enough to be recognisable (the whsec_ body, a JWT's signature).
    parts = {
        "webhook secret body": hook["secret"].removeprefix("whsec_"),
        "jwt signature": token.rsplit(".", 1)[1],
    }
    assert not {name for name, value in parts.items() if value in logged}
