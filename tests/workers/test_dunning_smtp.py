"""Acceptance 3: a -3/+1/+15/+30 policy run for 40 consecutive days with as_of, twice over, two
runs at once each day, two workers delivering: each step logged exactly once per installment,
the emails arrive at a real SMTP server (aiosmtpd), a payment on day 10 stops later steps."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from datetime import date, timedelta
from email import message_from_bytes, policy
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlmodel import col

from app.config import Settings
from app.main import create_app
from app.models.lead import Activity
from app.state import AppState
from app.workers.runner import run_worker
from tests.conftest import Servers, fresh_database, make_org, wait_for
from tests.factories import confirm, make_account, make_order, pay


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_acceptance_3_dunning_40_days_twice_two_runs_two_workers_real_smtp(
    settings: Settings, servers: Servers
) -> None:
    inbox = Inbox()
    port = _free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        async with fresh_database(servers) as database_url:
            own = settings.model_copy(
                update={
                    "database_url": database_url,
                    "queue_name": f"q-{uuid.uuid4().hex[:6]}",
                    "smtp_url": f"smtp://127.0.0.1:{port}",
                    "smtp_from": "Collections <ar@example.com>",
                }
            )
            await _scenario(own, inbox)
    finally:
        smtp.stop()


async def _scenario(own: Settings, inbox: Inbox) -> None:
    state = AppState.open(own)
    app = create_app(own, state=state)
    # Two workers on one queue, each with its outbox relay; no cron (the test picks the dates).
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_worker(own, stop, cron=False)) for _ in range(2)]
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            org = await make_org(state, client)
            manager_id, _ = await org.add_user("manager")
            r = await client.post(
                "/v1/teams", json={"name": "East", "manager_id": manager_id}, headers=org.auth()
            )
            assert r.status_code == 201, r.text
            rep_id, _ = await org.add_user("rep", team_id=r.json()["id"])
            r = await client.post(
                "/v1/dunning-policies",
                json={
                    "name": "Standard",
                    "is_default": True,
                    "steps": [
                        {"offset_days": -3, "action": "email", "language": "en"},
                        {"offset_days": 1, "action": "email", "language": "zh"},
                        {"offset_days": 15, "action": "owner_task"},
                        {"offset_days": 30, "action": "manager_task"},
                    ],
                },
                headers=org.auth(),
            )
            assert r.status_code == 201, r.text
            account = await make_account(
                org, name="Huahai Trading", billing_email="ap@huahai.example", owner_id=rep_id
            )
            day0 = date.today() - timedelta(days=10)  # day 10 is today: the payment may be dated then
            order = await make_order(
                org,
                account["id"],
                total="10000.00",
                ordered_at=day0.isoformat(),
                terms=[{"percent": "50", "due_days": 5}, {"percent": "50", "due_days": 8}],
            )
            first, second = order["installments"]

            async def run(day: int) -> dict[str, Any]:
                r = await client.post(
                    f"/v1/dunning/run?as_of={day0 + timedelta(days=day)}", headers=org.auth()
                )
                assert r.status_code == 200, r.text
                return dict(r.json())

            fired = Counter[int]()
            for rerun in range(2):
                for day in range(1, 41):
                    results = await asyncio.gather(run(day), run(day))
                    fired[rerun] += sum(res["fired"] for res in results)
                    if rerun == 0 and day == 10:
                        payment = await pay(
                            org, account["id"], "5000.00", received_at=(day0 + timedelta(days=10)).isoformat()
                        )
                        await confirm(org, payment["id"])
            assert fired == {0: 6, 1: 0}

            log1 = (await client.get(f"/v1/installments/{first['id']}/dunning", headers=org.auth())).json()
            log2 = (await client.get(f"/v1/installments/{second['id']}/dunning", headers=org.auth())).json()
            # Installment 1 (due day 5) was paid on day 10: its +15 and +30 steps never happen.
            assert [(e["offset_days"], e["outcome"], e["trigger_date"]) for e in log1] == [
                (-3, "fired", str(day0 + timedelta(days=2))),
                (1, "fired", str(day0 + timedelta(days=6))),
            ]
            assert [(e["offset_days"], e["outcome"], e["run_for"]) for e in log2] == [
                (-3, "fired", str(day0 + timedelta(days=5))),
                (1, "fired", str(day0 + timedelta(days=9))),
                (15, "fired", str(day0 + timedelta(days=23))),
                (30, "fired", str(day0 + timedelta(days=38))),
            ]
            async with state.sessions() as session:
                tasks_by_id = {
                    a.id: a
                    for a in (
                        await session.execute(
                            select(Activity)
                            .where(col(Activity.org_id) == uuid.UUID(org.id))
                            .execution_options(cross_tenant=True)
                        )
                    ).scalars()
                }
            assert str(tasks_by_id[uuid.UUID(log2[2]["task_id"])].owner_id) == rep_id
            assert str(tasks_by_id[uuid.UUID(log2[3]["task_id"])].owner_id) == manager_id  # escalation
            assert len(tasks_by_id) == 2

            # Four emails, each delivered once, through the real SMTP server.
            await wait_for(lambda: _sent(client, org), timeout=30)
            await asyncio.sleep(0.3)
            assert len(inbox.messages) == 4
            ids = Counter(m["X-Loudou-Message-Id"] for m in inbox.messages)
            assert set(ids.values()) == {1}
            assert {m["To"] for m in inbox.messages} == {"ap@huahai.example"}
            subjects = sorted(str(m["Subject"]) for m in inbox.messages)
            assert sum("Payment reminder" in s for s in subjects) == 2  # the -3 steps, English
            assert sum("付款提醒" in s for s in subjects) == 2  # the +1 steps, Chinese
            bodies = [m.get_content() for m in inbox.messages]
            assert all("Huahai Trading" in b and order["number"] in b for b in bodies)
            messages = (await client.get("/v1/outbound-messages", headers=org.auth())).json()["data"]
            assert len(messages) == 4 and {m["state"] for m in messages} == {"sent"}
            assert {m["transport"] for m in messages} == {"smtp"}
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        await state.close()


async def _sent(client: httpx.AsyncClient, org: Any) -> bool:
    r = await client.get("/v1/outbound-messages?state=sent", headers=org.auth())
    return len(r.json()["data"]) == 4


async def test_smtp_failures_retry_then_fail_and_a_crashed_try_is_never_resent(
    settings: Settings, servers: Servers
) -> None:
    # A database of its own: the session's worker must not pick up these emails.
    async with fresh_database(servers) as database_url:
        own = settings.model_copy(
            update={"database_url": database_url, "queue_name": f"q-{uuid.uuid4().hex[:6]}"}
        )
        state = AppState.open(own)
        try:
            app = create_app(own, state=state)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                await _smtp_failures(own, state, client)
        finally:
            await state.close()


async def _smtp_failures(settings: Settings, state: AppState, client: httpx.AsyncClient) -> None:
    from arq import Retry
    from sqlalchemy import text

    from app.models.outbox import OutboxEvent
    from app.services.receivables import dunning
    from app.workers.receivables import SMTP_TRIES, send_dunning_email

    org = await make_org(state, client)
    r = await client.post(
        "/v1/dunning-policies",
        json={"name": "d", "is_default": True, "steps": [{"offset_days": 0, "action": "email"}]},
        headers=org.auth(),
    )
    assert r.status_code == 201
    account = await make_account(org, billing_email="ap@example.com")
    for _ in range(2):
        await make_order(org, account["id"], terms=[{"percent": "100", "due_days": 0}])
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        await dunning.run(session, uuid.UUID(org.id), as_of=date.today(), smtp=True)
        await session.commit()
        outbox_ids = [
            str(e.id)
            for e in (
                await session.execute(
                    select(OutboxEvent)
                    .where(col(OutboxEvent.event_type) == "dunning.email")
                    .order_by(col(OutboxEvent.created_at))
                )
            ).scalars()
        ]
    assert len(outbox_ids) == 2
    # Nothing listens on this port: every try fails, the last one marks the message failed.
    down = AppState.open(settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{_free_port()}"}))
    try:
        ctx = {"state": down}
        for attempt in range(1, SMTP_TRIES):
            try:
                await send_dunning_email(ctx, outbox_ids[0])
                raise AssertionError("expected a retry")
            except Retry:
                pass
            messages = (await client.get("/v1/outbound-messages", headers=org.auth())).json()["data"]
            first = next(m for m in messages if m["attempts"] == attempt)
            assert first["state"] == "queued" and first["last_error"]
        assert await send_dunning_email(ctx, outbox_ids[0]) == "failed"
        # A try that was under way when its worker died is not sent again.
        inbox = Inbox()
        port = _free_port()
        smtp = Controller(inbox, hostname="127.0.0.1", port=port)
        smtp.start()
        up = AppState.open(settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}"}))
        try:
            async with state.sessions() as session:
                await session.execute(
                    text(
                        "UPDATE outbound_messages SET state = 'sending' WHERE org_id = :o AND state = 'queued'"
                    ),
                    {"o": org.id},
                )
                await session.commit()
            assert await send_dunning_email({"state": up}, outbox_ids[1]) == "nothing to do"
            await asyncio.sleep(0.2)
            assert inbox.messages == []
        finally:
            smtp.stop()
            await up.close()
    finally:
        await down.close()
    states = sorted(
        m["state"] for m in (await client.get("/v1/outbound-messages", headers=org.auth())).json()["data"]
    )
    assert states == ["failed", "failed"]
