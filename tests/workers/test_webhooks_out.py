"""Outbound webhooks: Standard Webhooks signatures, retries, 410, filters, replay, isolation."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import respx
from standardwebhooks.webhooks import Webhook

from app.models.events import DealLost, DealWon, EventData, LeadAssigned, LeadCreated, LeadRecycled, Ping
from app.services import outbox
from app.state import AppState
from tests.conftest import Org, wait_for

RECEIVER = "https://receiver.example/hooks"


async def _emit(state: AppState, org: Org, data: EventData) -> str:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(org.id)
        event = await outbox.emit(session, data)
        await session.commit()
        return str(event.id)


async def _subscribe(org: Org, **body: Any) -> dict[str, Any]:
    r = await org.client.post("/v1/webhook-subscriptions", json={"url": RECEIVER, **body}, headers=org.auth())
    assert r.status_code == 201, r.text
    assert r.json()["secret"].startswith("whsec_")
    created: dict[str, Any] = r.json()
    return created


async def _deliveries(org: Org, sub_id: str) -> list[dict[str, Any]]:
    r = await org.client.get(f"/v1/webhook-subscriptions/{sub_id}/deliveries", headers=org.auth())
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _verify(secret: str, request: httpx.Request) -> Any:
    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    return Webhook(secret).verify(request.content, headers)


async def test_delivery_is_signed_and_retried_until_it_succeeds(
    org: Org, state: AppState, worker: None
) -> None:
    sub = await _subscribe(org, event_types=["lead.created", "lead.assigned"])
    lead_id = str(uuid.uuid4())
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(RECEIVER).mock(
            side_effect=[httpx.Response(500), httpx.Response(500), httpx.Response(200)]
        )
        await _emit(state, org, LeadCreated(lead_id=lead_id, source="web_form"))

        async def succeeded() -> bool:
            rows = await _deliveries(org, sub["id"])
            return bool(rows) and rows[0]["status"] == "succeeded"

        await wait_for(succeeded, timeout=15)
        assert route.call_count == 3
        ids = {call.request.headers["webhook-id"] for call in route.calls}
        assert len(ids) == 1  # the same message id on every try
        payload = _verify(sub["secret"], route.calls[2].request)
        assert payload["type"] == "lead.created" and payload["data"]["lead_id"] == lead_id
        assert payload["organisation_id"] == org.id
    delivery = (await _deliveries(org, sub["id"]))[0]
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert [a["number"] for a in delivery["attempt_log"]] == [1, 2, 3]


async def test_410_disables_the_subscription(org: Org, state: AppState, worker: None) -> None:
    sub = await _subscribe(org)
    with respx.mock(assert_all_called=False) as mock:
        mock.post(RECEIVER).mock(return_value=httpx.Response(410))
        await _emit(state, org, DealWon(deal_id=uuid.uuid4()))

        async def disabled() -> bool:
            r = await org.client.get(f"/v1/webhook-subscriptions/{sub['id']}", headers=org.auth())
            return r.json()["active"] is False

        await wait_for(disabled, timeout=15)
    body = (await org.client.get(f"/v1/webhook-subscriptions/{sub['id']}", headers=org.auth())).json()
    assert "410" in body["disabled_reason"]
    delivery = (await _deliveries(org, sub["id"]))[0]
    assert delivery["status"] == "failed" and delivery["attempts"] == 1


async def test_4xx_is_final_and_replay_sends_again(org: Org, state: AppState, worker: None) -> None:
    sub = await _subscribe(org, event_types=["lead.assigned"])
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(RECEIVER).mock(side_effect=[httpx.Response(400), httpx.Response(204)])
        await _emit(state, org, LeadAssigned(lead_id=uuid.uuid4()))

        async def failed() -> dict[str, Any] | None:
            rows = await _deliveries(org, sub["id"])
            return rows[0] if rows and rows[0]["status"] == "failed" else None

        delivery = await wait_for(failed, timeout=15)
        assert delivery["attempts"] == 1
        r = await org.client.post(
            f"/v1/webhook-subscriptions/{sub['id']}/deliveries/{delivery['id']}/replay", headers=org.auth()
        )
        assert r.status_code == 202

        async def succeeded() -> bool:
            status: str = (await _deliveries(org, sub["id"]))[0]["status"]
            return status == "succeeded"

        await wait_for(succeeded, timeout=15)
        assert route.call_count == 2
        assert route.calls[0].request.content == route.calls[1].request.content


async def test_event_types_and_filter_select_deliveries(org: Org, state: AppState, worker: None) -> None:
    email_only = await _subscribe(org, event_types=["lead.created"], filter={"source": "email"})
    everything = await _subscribe(org)
    with respx.mock(assert_all_called=False) as mock:
        mock.post(RECEIVER).mock(return_value=httpx.Response(200))
        await _emit(state, org, LeadCreated(lead_id=uuid.uuid4(), source="web_form"))
        await _emit(state, org, Ping())  # internal: never delivered

        async def delivered() -> bool:
            rows = await _deliveries(org, everything["id"])
            return bool(rows) and rows[0]["status"] == "succeeded"

        await wait_for(delivered, timeout=15)
    assert await _deliveries(org, email_only["id"]) == []
    assert [d["event_type"] for d in await _deliveries(org, everything["id"])] == ["lead.created"]


async def test_rotated_secret_signs_with_both_for_a_while(org: Org, state: AppState, worker: None) -> None:
    sub = await _subscribe(org)
    rotated = await org.client.post(
        f"/v1/webhook-subscriptions/{sub['id']}/rotate-secret", headers=org.auth()
    )
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != sub["secret"]
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(RECEIVER).mock(return_value=httpx.Response(200))
        await _emit(state, org, LeadRecycled(lead_id=uuid.uuid4()))

        async def called() -> bool:
            return route.call_count >= 1

        await wait_for(called, timeout=15)
        request = route.calls[0].request
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert _verify(new_secret, request)["type"] == "lead.recycled"
    assert _verify(sub["secret"], request)["type"] == "lead.recycled"


async def test_other_organisations_events_and_subscriptions_stay_apart(
    org: Org, other_org: Org, state: AppState, worker: None
) -> None:
    sub = await _subscribe(org)
    theirs = await _subscribe(other_org)
    assert (
        await other_org.client.get(f"/v1/webhook-subscriptions/{sub['id']}", headers=other_org.auth())
    ).status_code == 404
    assert (
        await other_org.client.get(
            f"/v1/webhook-subscriptions/{sub['id']}/deliveries", headers=other_org.auth()
        )
    ).status_code == 404
    listed = (await other_org.client.get("/v1/webhook-subscriptions", headers=other_org.auth())).json()[
        "data"
    ]
    assert [s["id"] for s in listed] == [theirs["id"]]
    with respx.mock(assert_all_called=False) as mock:
        mock.post(RECEIVER).mock(return_value=httpx.Response(200))
        await _emit(state, org, DealLost(deal_id=uuid.uuid4()))

        async def delivered() -> bool:
            rows = await _deliveries(org, sub["id"])
            return bool(rows) and rows[0]["status"] == "succeeded"

        await wait_for(delivered, timeout=15)
    assert await _deliveries(other_org, theirs["id"]) == []


async def test_only_admins_manage_subscriptions_and_input_is_checked(org: Org) -> None:
    _, rep = await org.add_user("rep")
    _, viewer = await org.add_user("viewer")
    assert (await org.client.get("/v1/webhook-subscriptions", headers=org.auth(rep))).status_code == 403
    r = await org.client.post("/v1/webhook-subscriptions", json={"url": RECEIVER}, headers=org.auth(rep))
    assert r.status_code == 403
    r = await org.client.post("/v1/webhook-subscriptions", json={"url": RECEIVER}, headers=org.auth(viewer))
    assert r.status_code == 403
    r = await org.client.post(
        "/v1/webhook-subscriptions",
        json={"url": "not a url", "event_types": ["lead.exploded"]},
        headers=org.auth(),
    )
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"url", "event_types"}
    listed = (await org.client.get("/v1/webhook-subscriptions", headers=org.auth())).json()
    assert listed["data"] == [] and "secret" not in json.dumps(listed)
