"""Two organisations never see each other's rows: 404 on get, absent from lists, no writes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app.db import TenancyError
from app.models.user import User
from app.state import AppState
from tests.conftest import Org


async def test_every_object_of_one_org_is_404_for_another(org: Org, other_org: Org) -> None:
    user_id, _ = await org.add_user("rep")
    team = (await org.client.post("/v1/teams", json={"name": "T"}, headers=org.auth())).json()
    keys = (await org.client.get("/v1/api-keys", headers=org.auth())).json()["data"]
    ping = (await org.client.post("/v1/diagnostics/ping", headers=org.auth())).json()
    h = other_org.auth()
    for url in (
        f"/v1/users/{user_id}",
        f"/v1/teams/{team['id']}",
        f"/v1/api-keys/{keys[0]['id']}",
        f"/v1/diagnostics/outbox/{ping['id']}",
    ):
        r = await other_org.client.get(url, headers=h)
        assert r.status_code == 404, url
        assert r.json()["code"] == "not_found"
    assert (
        await other_org.client.patch(f"/v1/users/{user_id}", json={"name": "x"}, headers=h)
    ).status_code == 404
    assert (await other_org.client.delete(f"/v1/users/{user_id}", headers=h)).status_code == 404
    assert (
        await other_org.client.patch(f"/v1/teams/{team['id']}", json={"name": "x"}, headers=h)
    ).status_code == 404
    assert (await other_org.client.delete(f"/v1/teams/{team['id']}", headers=h)).status_code == 404
    assert (await other_org.client.delete(f"/v1/api-keys/{keys[0]['id']}", headers=h)).status_code == 404
    r = await other_org.client.post("/v1/teams", json={"name": "Mine", "member_ids": [user_id]}, headers=h)
    assert r.status_code == 422  # another org's user does not exist here
    r = await other_org.client.post("/v1/api-keys", json={"name": "steal", "user_id": user_id}, headers=h)
    assert r.status_code == 404
    # Unchanged on the owning side.
    assert (await org.client.get(f"/v1/users/{user_id}", headers=org.auth())).json()["active"] is True


async def test_lists_only_show_own_rows(org: Org, other_org: Org) -> None:
    await org.add_user("rep")
    await org.client.post("/v1/teams", json={"name": "Only A"}, headers=org.auth())
    for url in ("/v1/users", "/v1/teams", "/v1/api-keys"):
        mine = (await org.client.get(url, headers=org.auth())).json()["data"]
        theirs = (await other_org.client.get(url, headers=other_org.auth())).json()["data"]
        assert {row["org_id"] for row in mine} == {org.id}, url
        assert {row["org_id"] for row in theirs} <= {other_org.id}, url
        assert not {row["id"] for row in mine} & {row["id"] for row in theirs}


async def test_session_without_organisation_refuses_tenant_queries(state: AppState) -> None:
    async with state.sessions() as session:
        with pytest.raises(TenancyError):
            await session.execute(select(User))


async def test_scoped_session_filters_get_and_refuses_foreign_writes(
    state: AppState, org: Org, other_org: Org
) -> None:
    async with state.sessions() as session:
        session.info["org_id"] = uuid.UUID(other_org.id)
        assert await session.get(User, uuid.UUID(org.admin_id)) is None
        session.add(User(org_id=uuid.UUID(org.id), email="sneaky@example.com"))
        with pytest.raises(TenancyError):
            await session.flush()
        await session.rollback()


async def test_get_by_id_completes_the_key_with_the_sessions_organisation(state: AppState, org: Org) -> None:
    async with state.sessions() as session:
        with pytest.raises(TenancyError):
            await session.get(User, uuid.UUID(org.admin_id))
        session.info["org_id"] = uuid.UUID(org.id)
        user = await session.get(User, uuid.UUID(org.admin_id))
        assert user is not None and (user.org_id, user.id) == (uuid.UUID(org.id), uuid.UUID(org.admin_id))
        assert await session.get(User, {"org_id": uuid.UUID(org.id), "id": uuid.UUID(org.admin_id)}) is user
