"""线索回收: an owned lead with no follow-up goes back to the pool, after one warning."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from app.state import AppState
from tests.conftest import Org, wait_for


async def test_quiet_lead_is_warned_then_recycled_and_a_follow_up_postpones_it(
    org: Org, state: AppState, worker: None
) -> None:
    r = await org.client.patch(
        "/v1/organisation",
        json={"settings": {"lead_recycle_after": "PT10S", "lead_recycle_warning": "PT7S"}},
        headers=org.auth(),
    )
    assert r.status_code == 200, r.text
    rep, rep_key = await org.add_user("rep")
    quiet = (
        await org.client.post(
            "/v1/leads", json={"email": "quiet@example.com", "owner_id": rep}, headers=org.auth()
        )
    ).json()
    busy = (
        await org.client.post(
            "/v1/leads", json={"email": "busy@example.com", "owner_id": rep}, headers=org.auth()
        )
    ).json()
    await asyncio.sleep(2)
    r = await org.client.post(
        f"/v1/leads/{busy['id']}/activities",
        json={"kind": "note", "subject": "Checked in"},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 201
    noted_at = datetime.fromisoformat(r.json()["occurred_at"])

    async def recycled(lead_id: str) -> dict[str, Any] | None:
        lead = (await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
        return lead if lead["owner_id"] is None else None

    lead = await wait_for(lambda: recycled(quiet["id"]), timeout=30)
    assert lead["pooled"] is True
    decision = (await org.client.get(f"/v1/leads/{quiet['id']}/assignment", headers=org.auth())).json()
    assert decision["trigger"] == "recycle" and decision["outcome"] == "recycled"
    assert decision["previous_owner_id"] == rep
    # The note restarted the busy lead's clock: it goes back only 10 s after the note, not before.
    await wait_for(lambda: recycled(busy["id"]), timeout=30)
    busy_decision = (await org.client.get(f"/v1/leads/{busy['id']}/assignment", headers=org.auth())).json()
    assert busy_decision["trigger"] == "recycle"
    assert datetime.fromisoformat(busy_decision["created_at"]) >= noted_at + timedelta(seconds=10)

    async with state.engine.connect() as conn:
        events = (
            await conn.execute(
                text(
                    "SELECT event_type, count(*) FROM outbox WHERE payload->>'lead_id' = :lead "
                    "AND event_type IN ('lead.recycle_warning', 'lead.recycled') GROUP BY event_type"
                ),
                {"lead": quiet["id"]},
            )
        ).all()
    assert dict(events) == {"lead.recycle_warning": 1, "lead.recycled": 1}


async def test_recycling_settings_are_validated(org: Org) -> None:
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"lead_recycle_after": "three days"}}, headers=org.auth()
    )
    assert r.status_code == 422
    r = await org.client.patch(
        "/v1/organisation", json={"settings": {"lead_recycle_after": "p3d"}}, headers=org.auth()
    )
    assert r.status_code == 200 and r.json()["settings"]["lead_recycle_after"] == "P3D"
