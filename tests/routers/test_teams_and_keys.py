"""Teams and API keys: membership, scopes narrowed by role, visibility."""

from __future__ import annotations

from tests.conftest import Org


async def test_team_with_manager_and_members(org: Org) -> None:
    manager_id, _ = await org.add_user("manager")
    rep1, _ = await org.add_user("rep")
    rep2, _ = await org.add_user("rep")
    r = await org.client.post(
        "/v1/teams",
        json={"name": "华东销售", "manager_id": manager_id, "member_ids": [rep1, rep2]},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    team = r.json()
    assert set(team["member_ids"]) == {manager_id, rep1, rep2}
    user = (await org.client.get(f"/v1/users/{rep1}", headers=org.auth())).json()
    assert user["team_id"] == team["id"]

    r = await org.client.patch(
        f"/v1/teams/{team['id']}",
        json={"member_ids": [rep2]},
        headers={**org.auth(), "If-Match": f'"{team["version"]}"'},
    )
    assert r.status_code == 200 and r.json()["member_ids"] == [rep2]
    assert (await org.client.get(f"/v1/users/{rep1}", headers=org.auth())).json()["team_id"] is None

    r = await org.client.delete(f"/v1/teams/{team['id']}", headers=org.auth())
    assert r.status_code == 204
    assert (await org.client.get(f"/v1/teams/{team['id']}", headers=org.auth())).status_code == 404
    assert (await org.client.get(f"/v1/users/{rep2}", headers=org.auth())).json()["team_id"] is None


async def test_team_names_are_unique_and_members_must_exist(org: Org) -> None:
    assert (await org.client.post("/v1/teams", json={"name": "A"}, headers=org.auth())).status_code == 201
    assert (await org.client.post("/v1/teams", json={"name": "A"}, headers=org.auth())).status_code == 409
    r = await org.client.post(
        "/v1/teams",
        json={"name": "B", "member_ids": ["00000000-0000-0000-0000-000000000001"]},
        headers=org.auth(),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "member_ids"


async def test_manager_cannot_change_teams(org: Org) -> None:
    _, key = await org.add_user("manager")
    r = await org.client.post("/v1/teams", json={"name": "Mine"}, headers=org.auth(key))
    assert r.status_code == 403


async def test_rep_makes_own_key_but_not_for_others(org: Org) -> None:
    rep_id, rep_key = await org.add_user("rep")
    r = await org.client.post("/v1/api-keys", json={"name": "phone"}, headers=org.auth(rep_key))
    assert r.status_code == 201
    assert r.json()["user_id"] == rep_id and r.json()["key"].startswith("ldk_")
    r = await org.client.post(
        "/v1/api-keys", json={"name": "x", "user_id": org.admin_id}, headers=org.auth(rep_key)
    )
    assert r.status_code == 403
    mine = (await org.client.get("/v1/api-keys", headers=org.auth(rep_key))).json()["data"]
    assert {k["user_id"] for k in mine} == {rep_id}
    assert all("key" not in k and "key_hash" not in k for k in mine)
    admin_key_id = (await org.client.get("/v1/me", headers=org.auth())).json()["api_key_id"]
    assert (
        await org.client.get(f"/v1/api-keys/{admin_key_id}", headers=org.auth(rep_key))
    ).status_code == 403


async def test_admin_key_for_viewer_is_narrowed_to_reads(org: Org) -> None:
    viewer_id, _ = await org.add_user("viewer")
    r = await org.client.post(
        "/v1/api-keys",
        json={"name": "bi", "user_id": viewer_id, "scopes": ["*", "users:write"]},
        headers=org.auth(),
    )
    assert r.status_code == 201
    assert r.json()["scopes"] == ["read", "users:read"]


async def test_scoped_key_is_limited_to_its_scopes(org: Org) -> None:
    r = await org.client.post(
        "/v1/api-keys", json={"name": "users only", "scopes": ["users:read"]}, headers=org.auth()
    )
    key = r.json()["key"]
    assert (await org.client.get("/v1/users", headers=org.auth(key))).status_code == 200
    assert (await org.client.get("/v1/teams", headers=org.auth(key))).status_code == 403
    r = await org.client.post("/v1/users", json={"email": "s@example.com"}, headers=org.auth(key))
    assert r.status_code == 403
    # A narrow key cannot mint a broader one.
    r = await org.client.post("/v1/api-keys", json={"name": "wider"}, headers=org.auth(key))
    assert r.status_code == 403


async def test_unknown_scope_is_422(org: Org) -> None:
    r = await org.client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["everything:please"]}, headers=org.auth()
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "scopes"
