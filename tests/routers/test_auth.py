"""Authentication: API keys, JWT login, /v1/me, problem+json on 401."""

from __future__ import annotations

from tests.conftest import ADMIN_PASSWORD, Org


async def test_me_answers_organisation_and_role_for_an_api_key(org: Org) -> None:
    r = await org.client.get("/v1/me", headers=org.auth())
    assert r.status_code == 200
    body = r.json()
    assert body["organisation"]["id"] == org.id
    assert body["role"] == "admin"
    assert body["user"]["id"] == org.admin_id
    assert body["scopes"] == ["*"]
    assert "password_hash" not in body["user"]


async def test_wrong_key_is_401_problem_json(org: Org) -> None:
    r = await org.client.get("/v1/me", headers={"Authorization": "Bearer ldk_not-a-real-key"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 401 and body["code"] == "unauthorized"
    assert body["type"].startswith("https://")
    assert "detail" in body and "request_id" in body
    assert r.headers["www-authenticate"] == "Bearer"


async def test_missing_and_malformed_authorization_are_401(org: Org) -> None:
    r = await org.client.get("/v1/me")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    r = await org.client.get("/v1/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_password_login_issues_a_jwt_that_authenticates(org: Org) -> None:
    me = (await org.client.get("/v1/me", headers=org.auth())).json()
    r = await org.client.post(
        "/v1/auth/token", json={"email": me["user"]["email"], "password": ADMIN_PASSWORD}
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert r.json()["token_type"] == "bearer"
    r = await org.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.json()["user"]["id"] == org.admin_id
    assert r.json()["api_key_id"] is None


async def test_wrong_password_is_401(org: Org) -> None:
    me = (await org.client.get("/v1/me", headers=org.auth())).json()
    r = await org.client.post("/v1/auth/token", json={"email": me["user"]["email"], "password": "nope"})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


async def test_tampered_jwt_is_401(org: Org) -> None:
    me = (await org.client.get("/v1/me", headers=org.auth())).json()
    token = (
        await org.client.post(
            "/v1/auth/token", json={"email": me["user"]["email"], "password": ADMIN_PASSWORD}
        )
    ).json()["access_token"]
    r = await org.client.get("/v1/me", headers={"Authorization": f"Bearer {token[:-2]}xx"})
    assert r.status_code == 401


async def test_revoked_key_stops_working(org: Org) -> None:
    user_id, key = await org.add_user("rep")
    assert (await org.client.get("/v1/me", headers=org.auth(key))).status_code == 200
    keys = (await org.client.get(f"/v1/api-keys?user_id={user_id}", headers=org.auth())).json()
    key_id = keys["data"][0]["id"]
    r = await org.client.delete(f"/v1/api-keys/{key_id}", headers=org.auth())
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert (await org.client.get("/v1/me", headers=org.auth(key))).status_code == 401


async def test_deactivated_user_cannot_authenticate(org: Org) -> None:
    user_id, key = await org.add_user("rep")
    r = await org.client.delete(f"/v1/users/{user_id}", headers=org.auth())
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await org.client.get("/v1/me", headers=org.auth(key))).status_code == 401
