"""The audit log records who changed what, with field diffs, and only admins read it."""

from __future__ import annotations

from tests.conftest import Org


async def test_user_changes_are_audited_with_diff_actor_and_request_id(org: Org) -> None:
    user_id, _ = await org.add_user("rep", name="Old Name")
    r = await org.client.patch(
        f"/v1/users/{user_id}", json={"name": "New Name"}, headers={**org.auth(), "X-Request-ID": "a" * 32}
    )
    assert r.status_code == 200
    log = (await org.client.get(f"/v1/audit-log?entity=user&entity_id={user_id}", headers=org.auth())).json()
    actions = [e["action"] for e in log["data"]]
    assert actions == ["update", "create"]  # newest first
    update = log["data"][0]
    assert update["changes"] == {"name": ["Old Name", "New Name"], "version": None} or update["changes"] == {
        "name": ["Old Name", "New Name"]
    }
    assert update["actor_user_id"] == org.admin_id
    assert update["actor_api_key_id"] is not None
    assert update["request_id"] == "a" * 32


async def test_only_admins_read_the_audit_log_and_only_their_org(org: Org, other_org: Org) -> None:
    _, manager_key = await org.add_user("manager")
    assert (await org.client.get("/v1/audit-log", headers=org.auth(manager_key))).status_code == 403
    await other_org.add_user("rep")
    mine = (await org.client.get("/v1/audit-log?limit=200", headers=org.auth())).json()["data"]
    theirs = (await other_org.client.get("/v1/audit-log?limit=200", headers=other_org.auth())).json()["data"]
    assert not {e["id"] for e in mine} & {e["id"] for e in theirs}
    assert {e["entity_id"] for e in mine} & {org.id}  # the organisation's own creation is there
