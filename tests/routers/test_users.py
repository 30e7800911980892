"""Users: admin-managed directory, self-service profile, passwords, ETags, roles, tenancy."""

from __future__ import annotations

from tests.conftest import Org


async def test_admin_creates_user_and_reads_it_back(org: Org) -> None:
    r = await org.client.post(
        "/v1/users",
        json={"email": "Li.Wei@Example.com", "name": "李伟", "role": "manager", "capacity": 30},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["email"] == "li.wei@example.com"
    assert created["name"] == "李伟" and created["role"] == "manager" and created["capacity"] == 30
    assert r.headers["etag"] == '"1"'
    got = await org.client.get(f"/v1/users/{created['id']}", headers=org.auth())
    assert got.status_code == 200 and got.json() == created


async def test_duplicate_email_is_409(org: Org) -> None:
    body = {"email": "dup@example.com"}
    assert (await org.client.post("/v1/users", json=body, headers=org.auth())).status_code == 201
    r = await org.client.post("/v1/users", json={"email": "DUP@example.com"}, headers=org.auth())
    assert r.status_code == 409
    assert r.json()["code"] == "conflict"


async def test_invalid_fields_are_422_with_field_errors(org: Org) -> None:
    r = await org.client.post(
        "/v1/users",
        json={"email": "not-an-email", "role": "boss", "timezone": "Mars/Olympus"},
        headers=org.auth(),
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"email", "role", "timezone"} <= fields


async def test_unknown_field_is_rejected(org: Org) -> None:
    r = await org.client.post(
        "/v1/users", json={"email": "x@example.com", "is_superuser": True}, headers=org.auth()
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "is_superuser"


async def test_rep_cannot_create_users(org: Org) -> None:
    _, rep_key = await org.add_user("rep")
    r = await org.client.post("/v1/users", json={"email": "new@example.com"}, headers=org.auth(rep_key))
    assert r.status_code == 403
    assert r.json()["code"] == "forbidden"
    listed = (await org.client.get("/v1/users?q=new@", headers=org.auth())).json()
    assert listed["data"] == []


async def test_viewer_cannot_write_anything_but_can_read(org: Org) -> None:
    viewer_id, key = await org.add_user("viewer")
    h = org.auth(key)
    assert (await org.client.get("/v1/users", headers=h)).status_code == 200
    assert (await org.client.get("/v1/teams", headers=h)).status_code == 200
    writes = [
        ("POST", "/v1/users", {"email": "v@example.com"}),
        ("PATCH", f"/v1/users/{viewer_id}", {"name": "me"}),
        ("DELETE", f"/v1/users/{viewer_id}", None),
        ("POST", "/v1/teams", {"name": "T"}),
        ("POST", "/v1/api-keys", {"name": "k"}),
        ("PATCH", "/v1/organisation", {"name": "X"}),
        ("POST", f"/v1/users/{viewer_id}/password", {"new_password": "long enough pw"}),
        ("POST", "/v1/diagnostics/ping", None),
    ]
    for method, url, body in writes:
        r = await org.client.request(method, url, json=body, headers=h)
        assert r.status_code == 403, (method, url, r.status_code)
    me = (await org.client.get(f"/v1/users/{viewer_id}", headers=org.auth())).json()
    assert me["name"] != "me"


async def test_user_edits_own_profile_but_not_own_role(org: Org) -> None:
    rep_id, key = await org.add_user("rep")
    r = await org.client.patch(
        f"/v1/users/{rep_id}", json={"name": "Zhang San", "timezone": "Asia/Shanghai"}, headers=org.auth(key)
    )
    assert r.status_code == 200 and r.json()["name"] == "Zhang San"
    assert r.json()["timezone"] == "Asia/Shanghai"
    r = await org.client.patch(f"/v1/users/{rep_id}", json={"role": "admin"}, headers=org.auth(key))
    assert r.status_code == 403
    other_id, _ = await org.add_user("rep")
    r = await org.client.patch(f"/v1/users/{other_id}", json={"name": "x"}, headers=org.auth(key))
    assert r.status_code == 403


async def test_stale_if_match_is_412_and_fresh_one_applies(org: Org) -> None:
    user_id, _ = await org.add_user("rep")
    first = await org.client.get(f"/v1/users/{user_id}", headers=org.auth())
    etag = first.headers["etag"]
    r = await org.client.patch(
        f"/v1/users/{user_id}", json={"name": "A"}, headers={**org.auth(), "If-Match": etag}
    )
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    r = await org.client.patch(
        f"/v1/users/{user_id}", json={"name": "B"}, headers={**org.auth(), "If-Match": etag}
    )
    assert r.status_code == 412
    assert r.json()["code"] == "stale_version" and r.json()["current_version"] == 2
    assert (await org.client.get(f"/v1/users/{user_id}", headers=org.auth())).json()["name"] == "A"


async def test_working_hours_are_validated(org: Org) -> None:
    r = await org.client.post(
        "/v1/users",
        json={"email": "wh@example.com", "working_hours": {"mon": ["18:00", "09:00"]}},
        headers=org.auth(),
    )
    assert r.status_code == 422
    r = await org.client.post(
        "/v1/users",
        json={"email": "wh@example.com", "working_hours": {"mon": ["09:00", "18:00"]}},
        headers=org.auth(),
    )
    assert r.status_code == 201 and r.json()["working_hours"] == {"mon": ["09:00", "18:00"]}


async def test_password_change_needs_current_and_admin_can_reset(org: Org) -> None:
    user_id, key = await org.add_user("rep", password="first password")
    email = (await org.client.get(f"/v1/users/{user_id}", headers=org.auth())).json()["email"]
    r = await org.client.post(
        f"/v1/users/{user_id}/password",
        json={"current_password": "wrong one", "new_password": "second password"},
        headers=org.auth(key),
    )
    assert r.status_code == 401
    r = await org.client.post(
        f"/v1/users/{user_id}/password",
        json={"current_password": "first password", "new_password": "second password"},
        headers=org.auth(key),
    )
    assert r.status_code == 204
    login = await org.client.post("/v1/auth/token", json={"email": email, "password": "second password"})
    assert login.status_code == 200
    r = await org.client.post(
        f"/v1/users/{user_id}/password", json={"new_password": "reset by admin"}, headers=org.auth()
    )
    assert r.status_code == 204
    login = await org.client.post("/v1/auth/token", json={"email": email, "password": "reset by admin"})
    assert login.status_code == 200
    other_id, _ = await org.add_user("rep")
    r = await org.client.post(
        f"/v1/users/{other_id}/password", json={"new_password": "not mine to set"}, headers=org.auth(key)
    )
    assert r.status_code == 403


async def test_admin_cannot_deactivate_themselves(org: Org) -> None:
    r = await org.client.delete(f"/v1/users/{org.admin_id}", headers=org.auth())
    assert r.status_code == 409
    assert (await org.client.get("/v1/me", headers=org.auth())).status_code == 200


async def test_list_filters_and_cursor_paging(org: Org) -> None:
    ids = [(await org.add_user("rep"))[0] for _ in range(5)]
    await org.add_user("viewer")
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/users?role=rep&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await org.client.get(url, headers=org.auth())).json()
        assert len(page["data"]) <= 2
        seen += [u["id"] for u in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids  # oldest first, no duplicates, none missing
    desc = (await org.client.get("/v1/users?role=rep&sort=-created_at", headers=org.auth())).json()
    assert [u["id"] for u in desc["data"]] == list(reversed(ids))


async def test_bad_sort_and_cursor_are_422(org: Org) -> None:
    r = await org.client.get("/v1/users?sort=password_hash", headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "sort"
    r = await org.client.get("/v1/users?cursor=!!!garbage", headers=org.auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"


async def test_limit_is_capped_not_rejected(org: Org) -> None:
    r = await org.client.get("/v1/users?limit=100000", headers=org.auth())
    assert r.status_code == 200
    assert r.json()["data"][0]["id"] == org.admin_id


async def test_a_password_change_ends_the_sessions_of_the_old_password(org: Org) -> None:
    user_id, _ = await org.add_user("rep", password="first password")
    email = (await org.client.get(f"/v1/users/{user_id}", headers=org.auth())).json()["email"]
    old = (
        await org.client.post("/v1/auth/token", json={"email": email, "password": "first password"})
    ).json()
    bearer = {"Authorization": f"Bearer {old['access_token']}"}
    assert (await org.client.get("/v1/me", headers=bearer)).status_code == 200
    r = await org.client.post(
        f"/v1/users/{user_id}/password",
        json={"current_password": "first password", "new_password": "second password"},
        headers=bearer,
    )
    assert r.status_code == 204, r.text
    assert (await org.client.get("/v1/me", headers=bearer)).status_code == 401
    new = (
        await org.client.post("/v1/auth/token", json={"email": email, "password": "second password"})
    ).json()
    assert (
        await org.client.get("/v1/me", headers={"Authorization": f"Bearer {new['access_token']}"})
    ).status_code == 200
