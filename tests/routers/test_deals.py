"""Deals: the walk through the default pipeline, exit criteria, history, won/lost/reopen, visibility."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from sqlalchemy import select, update
from sqlmodel import col

from app.models.base import utcnow
from app.models.deal import Deal, DealFieldHistory, DealStageHistory
from app.state import AppState
from tests.conftest import Org
from tests.factories import events, make_deal, make_team, stages


async def test_a_deal_walks_from_prospect_to_won_with_complete_history(org: Org, state: AppState) -> None:
    s = await stages(org)
    r = await org.client.post("/v1/contacts", json={"name": "王伟"}, headers=org.auth())
    contact_id = r.json()["id"]
    deal = await make_deal(org, currency="CNY")
    assert deal["stage_id"] == s["prospect"] and deal["probability"] == "10.00" and deal["status"] == "open"
    move = f"/v1/deals/{deal['id']}/move"

    r = await org.client.post(move, json={"stage_id": s["first_contact"]}, headers=org.auth())
    assert r.status_code == 200
    r = await org.client.post(move, json={"stage_id": s["needs_confirmed"]}, headers=org.auth())
    assert r.status_code == 422
    assert [(e["field"], e["code"]) for e in r.json()["errors"]] == [
        ("contact_id", "required_to_leave_stage")
    ]
    assert "contact_id" in r.json()["detail"]
    await org.client.patch(f"/v1/deals/{deal['id']}", json={"contact_id": contact_id}, headers=org.auth())
    assert (
        await org.client.post(move, json={"stage_id": s["needs_confirmed"]}, headers=org.auth())
    ).status_code == 200
    r = await org.client.post(move, json={"stage_id": s["quote"]}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "amount"
    await org.client.patch(f"/v1/deals/{deal['id']}", json={"amount": "5000.00"}, headers=org.auth())
    assert (await org.client.post(move, json={"stage_id": s["quote"]}, headers=org.auth())).status_code == 200
    r = await org.client.post(move, json={"stage_id": s["negotiation"]}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "expected_close_date"
    await org.client.patch(
        f"/v1/deals/{deal['id']}", json={"expected_close_date": "2026-12-31"}, headers=org.auth()
    )
    assert (
        await org.client.post(move, json={"stage_id": s["negotiation"]}, headers=org.auth())
    ).status_code == 200
    r = await org.client.post(f"/v1/deals/{deal['id']}/won", headers=org.auth())
    assert r.status_code == 200, r.text
    won = r.json()
    assert won["status"] == "won" and won["stage_id"] == s["won"] and won["probability"] == "100.00"
    assert won["closed_at"] is not None and won["amount"] == "5000.00"

    history = (await org.client.get(f"/v1/deals/{deal['id']}/history", headers=org.auth())).json()
    moves = [(h["from_stage_id"], h["to_stage_id"]) for h in history if h["kind"] == "stage"]
    path = [None, "prospect", "first_contact", "needs_confirmed", "quote", "negotiation", "won"]
    assert moves == [(s.get(str(a)) if a else None, s[str(b)]) for a, b in itertools.pairwise(path)]
    fields = [(h["field"], h["old_value"], h["new_value"]) for h in history if h["kind"] == "field"]
    assert ("amount", None, "5000.00") in fields
    assert ("expected_close_date", None, "2026-12-31") in fields
    assert ("status", "open", "won") in fields
    probabilities = [(o, n) for f, o, n in fields if f == "probability"]
    assert probabilities == [
        (None, "10"),
        ("10", "20"),
        ("20", "40"),
        ("40", "60"),
        ("60", "80"),
        ("80", "100"),
    ]
    assert all(h["by_user_id"] == org.admin_id for h in history)
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)

    async with state.sessions() as session:
        stage_rows = (
            (
                await session.execute(
                    select(DealStageHistory)
                    .where(col(DealStageHistory.org_id) == org.id)
                    .execution_options(cross_tenant=True)
                )
            )
            .scalars()
            .all()
        )
        field_rows = (
            (
                await session.execute(
                    select(DealFieldHistory)
                    .where(col(DealFieldHistory.org_id) == org.id)
                    .execution_options(cross_tenant=True)
                )
            )
            .scalars()
            .all()
        )
    assert len(stage_rows) == len(moves) == 6 and len(field_rows) == len(fields)
    changed = await events(state, org, "deal.stage_changed")
    assert len(changed) == 5 and changed[-1]["to_stage_id"] == s["won"]
    assert [e["deal_id"] for e in await events(state, org, "deal.won")] == [deal["id"]]


async def test_moving_backwards_is_allowed_and_recorded(org: Org) -> None:
    s = await stages(org)
    deal = await make_deal(org, amount="10.00", probability="33")
    r = await org.client.post(
        f"/v1/deals/{deal['id']}/move", json={"stage_id": s["first_contact"]}, headers=org.auth()
    )
    assert r.status_code == 200 and r.json()["probability"] == "33.00"  # an override survives moves
    r = await org.client.post(
        f"/v1/deals/{deal['id']}/move", json={"stage_id": s["prospect"]}, headers=org.auth()
    )
    assert r.status_code == 200 and r.json()["stage_id"] == s["prospect"]
    history = (await org.client.get(f"/v1/deals/{deal['id']}/history", headers=org.auth())).json()
    assert [h["to_stage_id"] for h in history if h["kind"] == "stage"] == [
        s["prospect"],
        s["first_contact"],
        s["prospect"],
    ]


async def test_lost_needs_a_reason_from_the_list_and_reopen_returns_to_the_last_open_stage(
    org: Org, state: AppState
) -> None:
    s = await stages(org)
    deal = await make_deal(org)
    await org.client.post(
        f"/v1/deals/{deal['id']}/move", json={"stage_id": s["first_contact"]}, headers=org.auth()
    )
    r = await org.client.post(f"/v1/deals/{deal['id']}/lost", json={"reason": "aliens"}, headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "unknown_reason"
    r = await org.client.post(
        f"/v1/deals/{deal['id']}/move", json={"stage_id": s["lost"]}, headers=org.auth()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lost_reason"
    r = await org.client.post(
        f"/v1/deals/{deal['id']}/lost", json={"reason": "price", "note": "too dear"}, headers=org.auth()
    )
    assert r.status_code == 200
    assert (
        r.json()["status"] == "lost"
        and r.json()["lost_reason"] == "price"
        and r.json()["stage_id"] == s["lost"]
    )
    r = await org.client.post(
        f"/v1/deals/{deal['id']}/move", json={"stage_id": s["quote"]}, headers=org.auth()
    )
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = await org.client.post(f"/v1/deals/{deal['id']}/reopen", json={}, headers=org.auth())
    assert r.status_code == 200
    assert r.json()["status"] == "open" and r.json()["stage_id"] == s["first_contact"]
    assert r.json()["lost_reason"] is None and r.json()["closed_at"] is None
    r = await org.client.post(f"/v1/deals/{deal['id']}/reopen", json={}, headers=org.auth())
    assert r.status_code == 409
    lost = await events(state, org, "deal.lost")
    assert len(lost) == 1 and lost[0]["lost_reason"] == "price"


async def test_stale_if_match_is_412_and_fresh_one_works(org: Org) -> None:
    deal = await make_deal(org)
    url = f"/v1/deals/{deal['id']}"
    r = await org.client.get(url, headers=org.auth())
    assert r.headers["etag"] == '"1"'
    r = await org.client.patch(url, json={"name": "Renamed"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    r = await org.client.patch(url, json={"name": "Again"}, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["current_version"] == 2
    s = await stages(org)
    r = await org.client.post(
        f"{url}/move", json={"stage_id": s["first_contact"]}, headers={**org.auth(), "If-Match": '"1"'}
    )
    assert r.status_code == 412
    assert (await org.client.get(url, headers=org.auth())).json()["name"] == "Renamed"


async def test_amount_digits_follow_the_currency(org: Org) -> None:
    r = await org.client.post(
        "/v1/deals", json={"name": "x", "amount": "10.5", "currency": "JPY"}, headers=org.auth()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "too_many_decimals"
    deal = await make_deal(org, amount="10.5", currency="KWD")
    assert deal["amount"] == "10.500"


async def test_role_visibility_of_deals(org: Org) -> None:
    team = await make_team(org)
    other_team = await make_team(org)
    manager_id, manager = await org.add_user("manager", team_id=team)
    rep_id, rep = await org.add_user("rep", team_id=team)
    rep2_id, rep2 = await org.add_user("rep", team_id=other_team)
    _, viewer = await org.add_user("viewer")
    mine = await make_deal(org, rep)
    theirs = await make_deal(org, rep2)
    assert mine["owner_id"] == rep_id

    async def visible(key: str) -> set[str]:
        r = await org.client.get("/v1/deals", headers=org.auth(key))
        assert r.status_code == 200
        return {d["id"] for d in r.json()["data"]}

    assert await visible(rep) == {mine["id"]}
    assert await visible(manager) == {mine["id"]}
    assert await visible(viewer) == {mine["id"], theirs["id"]}
    assert await visible(org.admin_key) == {mine["id"], theirs["id"]}
    r = await org.client.get(f"/v1/deals/{theirs['id']}", headers=org.auth(rep))
    assert r.status_code == 404
    r = await org.client.patch(f"/v1/deals/{theirs['id']}", json={"name": "x"}, headers=org.auth(manager))
    assert r.status_code == 404
    r = await org.client.patch(
        f"/v1/deals/{mine['id']}", json={"name": "by manager"}, headers=org.auth(manager)
    )
    assert r.status_code == 200 and r.json()["name"] == "by manager"
    r = await org.client.patch(f"/v1/deals/{mine['id']}", json={"name": "x"}, headers=org.auth(viewer))
    assert r.status_code == 403
    r = await org.client.post("/v1/deals", json={"name": "x"}, headers=org.auth(viewer))
    assert r.status_code == 403
    r = await org.client.post("/v1/deals", json={"name": "x", "owner_id": rep2_id}, headers=org.auth(rep))
    assert r.status_code == 403
    r = await org.client.post("/v1/deals", json={"name": "x", "owner_id": rep2_id}, headers=org.auth(manager))
    assert r.status_code == 403
    r = await org.client.post("/v1/deals", json={"name": "x", "owner_id": rep_id}, headers=org.auth(manager))
    assert r.status_code == 201 and r.json()["owner_id"] == rep_id
    r = await org.client.get(f"/v1/deals?team_id={team}", headers=org.auth())
    assert {d["owner_id"] for d in r.json()["data"]} == {rep_id}
    assert manager_id


async def test_deals_are_isolated_between_organisations(org: Org, other_org: Org) -> None:
    deal = await make_deal(org)
    r = await other_org.client.get(f"/v1/deals/{deal['id']}", headers=other_org.auth())
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await other_org.client.get(f"/v1/deals/{deal['id']}/history", headers=other_org.auth())
    assert r.status_code == 404
    r = await other_org.client.post(f"/v1/deals/{deal['id']}/won", headers=other_org.auth())
    assert r.status_code == 404
    r = await other_org.client.get("/v1/deals", headers=other_org.auth())
    assert r.json()["data"] == [] and r.json()["totals"] == []
    s = await stages(org)
    r = await other_org.client.post(
        "/v1/deals", json={"name": "x", "pipeline_id": s["_pipeline"]}, headers=other_org.auth()
    )
    assert r.status_code == 404


async def test_list_filters_and_totals_per_currency(org: Org) -> None:
    s = await stages(org)
    a = await make_deal(org, amount="100.00", currency="USD", expected_close_date="2026-12-01")
    b = await make_deal(org, amount="300.00", currency="USD", expected_close_date="2027-02-01")
    c = await make_deal(org, amount="5000", currency="JPY")
    await org.client.post(
        f"/v1/deals/{b['id']}/move", json={"stage_id": s["first_contact"]}, headers=org.auth()
    )

    async def ids(query: str) -> list[str]:
        r = await org.client.get(f"/v1/deals?{query}", headers=org.auth())
        assert r.status_code == 200, r.text
        return sorted(d["id"] for d in r.json()["data"])

    assert await ids("amount_min=200") == sorted([b["id"], c["id"]])
    assert await ids("amount_max=150") == [a["id"]]
    assert await ids(f"stage_id={s['prospect']}") == sorted([a["id"], c["id"]])
    assert await ids("expected_close_from=2026-11-01&expected_close_to=2026-12-31") == [a["id"]]
    assert await ids("currency=JPY") == [c["id"]]
    assert await ids("rotting=true") == []
    assert len(await ids("rotting=false")) == 3
    r = await org.client.get("/v1/deals?limit=1&sort=amount", headers=org.auth())
    body = r.json()
    assert len(body["data"]) == 1 and body["next_cursor"]
    totals = {t["currency"]: t["amount"] for t in body["totals"]}
    assert totals == {"JPY": "5000", "USD": "400.00"}
    r = await org.client.get("/v1/deals?sort=bogus", headers=org.auth())
    assert r.status_code == 422


async def test_rotting_deals_are_idle_past_their_stage_threshold(org: Org, state: AppState) -> None:
    stale = await make_deal(org)
    fresh = await make_deal(org)
    async with state.sessions() as session:
        await session.execute(
            update(Deal)
            .where(col(Deal.id) == stale["id"])
            .values(last_activity_at=utcnow() - timedelta(days=15))
            .execution_options(cross_tenant=True)
        )
        await session.commit()
    r = await org.client.get("/v1/deals?rotting=true", headers=org.auth())
    assert [d["id"] for d in r.json()["data"]] == [stale["id"]]  # prospect rots after 14 days
    r = await org.client.get("/v1/deals?rotting=false", headers=org.auth())
    assert [d["id"] for d in r.json()["data"]] == [fresh["id"]]


async def test_concurrent_moves_of_one_deal_keep_a_continuous_history(org: Org) -> None:
    s = await stages(org)
    deal = await make_deal(org, contact_id=None)
    targets = [s["first_contact"], s["prospect"]] * 5
    responses = await asyncio.gather(
        *(
            org.client.post(f"/v1/deals/{deal['id']}/move", json={"stage_id": t}, headers=org.auth())
            for t in targets
        )
    )
    assert all(r.status_code == 200 for r in responses)
    history = (await org.client.get(f"/v1/deals/{deal['id']}/history", headers=org.auth())).json()
    rows = [h for h in history if h["kind"] == "stage"]
    for before, after in itertools.pairwise(rows):
        assert after["from_stage_id"] == before["to_stage_id"]
    final = (await org.client.get(f"/v1/deals/{deal['id']}", headers=org.auth())).json()
    assert final["stage_id"] == rows[-1]["to_stage_id"]


async def test_delete_a_deal_with_if_match_but_not_one_with_an_order(org: Org) -> None:
    deal = await make_deal(org)
    _, viewer = await org.add_user("viewer")
    url = f"/v1/deals/{deal['id']}"
    assert (await org.client.delete(url, headers=org.auth(viewer))).status_code == 403
    r = await org.client.delete(url, headers={**org.auth(), "If-Match": '"7"'})
    assert r.status_code == 412
    r = await org.client.delete(url, headers={**org.auth(), "If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["id"] == deal["id"]
    assert (await org.client.get(url, headers=org.auth())).status_code == 404
    assert (await org.client.get(f"{url}/history", headers=org.auth())).status_code == 404
    sold = await make_deal(org)
    q = (
        await org.client.post(
            "/v1/quotes",
            json={"deal_id": sold["id"], "lines": [{"description": "x", "quantity": "1", "unit_price": "5"}]},
            headers=org.auth(),
        )
    ).json()
    for action in ("submit", "send", "accept"):
        assert (
            await org.client.post(f"/v1/quotes/{q['id']}/{action}", headers=org.auth())
        ).status_code == 200
    r = await org.client.delete(f"/v1/deals/{sold['id']}", headers=org.auth())
    assert r.status_code == 409
