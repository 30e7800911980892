"""Lost updates: an intake touch and the recycle sweep lock the lead and bump its current
version, so two states never share an ETag."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from app.models.base import utcnow
from app.models.lead import Lead
from app.services.assignment import recycling
from app.state import AppState
from tests.conftest import Org


async def test_an_intake_touch_waits_for_a_concurrent_change_and_bumps_its_version(
    org: Org, state: AppState
) -> None:
    source = (
        await org.client.post("/v1/intake-sources", json={"kind": "form", "name": "site"}, headers=org.auth())
    ).json()
    first = await org.client.post(source["endpoint"], json={"email": "race@lead.example"})
    lead_id = uuid.UUID(first.json()["lead_id"])
    before = (await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
    async with state.sessions() as holder:
        holder.info["org_id"] = uuid.UUID(org.id)
        held = (
            await holder.execute(select(Lead).where(Lead.id == lead_id).with_for_update())  # type: ignore[arg-type]
        ).scalar_one()
        touch = asyncio.create_task(
            org.client.post(source["endpoint"], json={"email": "race@lead.example", "company": "Acme"})
        )
        await asyncio.sleep(0.5)
        assert not touch.done()  # the touch waits for the row, it does not work on a stale copy
        held.title = "Buyer"
        held.version += 1
        await holder.commit()
    r = await touch
    assert r.status_code in (200, 201), r.text
    after = (await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
    assert after["version"] == before["version"] + 2
    assert after["title"] == "Buyer" and after["company"] == "Acme" and after["touch_count"] == 2


async def test_the_recycle_sweep_skips_a_lead_being_changed(org: Org, state: AppState) -> None:
    rep, _ = await org.add_user("rep")
    r = await org.client.post(
        "/v1/leads", json={"email": "quiet@lead.example", "owner_id": rep}, headers=org.auth()
    )
    lead_id = uuid.UUID(r.json()["id"])
    async with state.sessions() as s:
        s.info["org_id"] = uuid.UUID(org.id)
        await s.execute(
            update(Lead).where(Lead.id == lead_id).values(assigned_at=utcnow() - timedelta(days=30))  # type: ignore[arg-type]
        )
        await s.commit()
    async with state.sessions() as holder, state.sessions() as sweeper:
        holder.info["org_id"] = sweeper.info["org_id"] = uuid.UUID(org.id)
        await holder.execute(select(Lead).where(Lead.id == lead_id).with_for_update())  # type: ignore[arg-type]
        _, recycled = await asyncio.wait_for(
            recycling.sweep_organisation(sweeper, recycle_after=timedelta(days=7), warn_before=None),
            timeout=5,
        )
        assert recycled == 0  # skipped, not blocked and not written over
        await sweeper.rollback()
        await holder.rollback()
    # The next sweep takes it. (The session's worker may hold the lead for a moment, running its
    # `lead.created` job; the sweep skips locked leads by design and the cron comes back.)
    for _ in range(40):
        async with state.sessions() as sweeper:
            sweeper.info["org_id"] = uuid.UUID(org.id)
            _, recycled = await recycling.sweep_organisation(
                sweeper, recycle_after=timedelta(days=7), warn_before=None
            )
            await sweeper.commit()
        if recycled:
            break
        await asyncio.sleep(0.25)
    assert recycled == 1
    lead = (await org.client.get(f"/v1/leads/{lead_id}", headers=org.auth())).json()
    assert lead["owner_id"] is None and lead["pooled"] is True and lead["version"] == r.json()["version"] + 1
