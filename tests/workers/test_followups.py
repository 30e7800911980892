"""Follow-up cadences: a task after assignment, the next after completion, overdue flagged once."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from tests.conftest import Org, wait_for


async def _tasks(org: Org, lead_id: str, key: str | None = None, **params: str) -> list[dict[str, Any]]:
    r = await org.client.get("/v1/tasks", params=params, headers=org.auth(key))
    assert r.status_code == 200, r.text
    return [t for t in r.json()["data"] if t["lead_id"] == lead_id]


async def test_policy_creates_a_task_after_assignment_and_the_next_after_completion(
    org: Org, worker: None
) -> None:
    rep, rep_key = await org.add_user("rep")
    r = await org.client.post(
        "/v1/assignment-rules", json={"name": "All", "target_user_ids": [rep]}, headers=org.auth()
    )
    assert r.status_code == 201
    for status, interval in (("new", "PT10S"), ("working", "P2D")):
        r = await org.client.post(
            "/v1/followup-policies",
            json={
                "name": f"{status} leads",
                "lead_status": status,
                "interval": interval,
                "task_subject": "Call them",
            },
            headers=org.auth(),
        )
        assert r.status_code == 201, r.text
    lead = (await org.client.post("/v1/leads", json={"email": "fu@example.com"}, headers=org.auth())).json()

    async def first_task() -> dict[str, Any] | None:
        tasks = await _tasks(org, lead["id"], rep_key, owner="me")
        return tasks[0] if tasks else None

    task = await wait_for(first_task, timeout=15)
    got = (await org.client.get(f"/v1/leads/{lead['id']}", headers=org.auth())).json()
    due = datetime.fromisoformat(task["due_at"]) - datetime.fromisoformat(got["assigned_at"])
    assert 9.9 <= due.total_seconds() <= 10.1
    assert task["owner_id"] == rep and task["subject"] == "Call them" and task["overdue"] is False

    r = await org.client.post(
        f"/v1/tasks/{task['id']}/complete",
        json={"outcome": "Interested, wants a demo"},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 200, r.text
    assert r.json()["task"]["done_at"] is not None
    timeline = (await org.client.get(f"/v1/leads/{lead['id']}/activities", headers=org.auth())).json()["data"]
    assert any(a["kind"] == "call" and a["body"] == "Interested, wants a demo" for a in timeline)

    async def next_task() -> dict[str, Any] | None:
        tasks = await _tasks(org, lead["id"], rep_key, owner="me", done="false")
        return tasks[0] if tasks else None

    following = await wait_for(next_task, timeout=15)
    assert following["id"] != task["id"]
    assert following["details"]["lead_status"] == "working"  # the call moved the lead to working
    gap = datetime.fromisoformat(following["due_at"]) - datetime.fromisoformat(r.json()["task"]["done_at"])
    assert 2 * 86400 - 5 <= gap.total_seconds() <= 2 * 86400 + 5

    again = await org.client.post(
        f"/v1/tasks/{task['id']}/complete", json={"outcome": "twice"}, headers=org.auth(rep_key)
    )
    assert again.status_code == 409


async def test_overdue_tasks_are_flagged_once_and_listed(org: Org, worker: None) -> None:
    rep, rep_key = await org.add_user("rep")
    lead = (
        await org.client.post(
            "/v1/leads", json={"email": "od@example.com", "owner_id": rep}, headers=org.auth()
        )
    ).json()
    r = await org.client.post(
        f"/v1/leads/{lead['id']}/activities",
        json={"kind": "task", "subject": "Send pricing", "due_at": "2026-01-01T00:00:00Z", "owner_id": rep},
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text

    async def flagged() -> dict[str, Any] | None:
        tasks = await _tasks(org, lead["id"], rep_key, overdue="true")
        return tasks[0] if tasks and tasks[0]["details"].get("overdue_at") else None

    task = await wait_for(flagged, timeout=15)
    assert task["overdue"] is True
    first_flag = task["details"]["overdue_at"]
    await asyncio.sleep(6)
    again = (await _tasks(org, lead["id"], rep_key, overdue="true"))[0]
    assert again["details"]["overdue_at"] == first_flag  # emitted once


async def test_tasks_are_private_to_reps_and_policies_to_managers(org: Org, other_org: Org) -> None:
    rep, rep_key = await org.add_user("rep")
    _, other_key = await org.add_user("rep")
    lead = (
        await org.client.post(
            "/v1/leads", json={"email": "own@example.com", "owner_id": rep}, headers=org.auth()
        )
    ).json()
    task = (
        await org.client.post(
            f"/v1/leads/{lead['id']}/activities",
            json={"kind": "task", "subject": "Mine", "due_at": "2030-01-01T00:00:00Z", "owner_id": rep},
            headers=org.auth(),
        )
    ).json()
    assert await _tasks(org, lead["id"], other_key) == []
    assert [t["id"] for t in await _tasks(org, lead["id"], rep_key)] == [task["id"]]
    r = await org.client.post(
        f"/v1/tasks/{task['id']}/complete", json={"outcome": "x"}, headers=org.auth(other_key)
    )
    assert r.status_code in (403, 404)
    r = await other_org.client.post(
        f"/v1/tasks/{task['id']}/complete", json={"outcome": "x"}, headers=other_org.auth()
    )
    assert r.status_code == 404
    r = await org.client.post(
        "/v1/followup-policies",
        json={"name": "x", "lead_status": "new", "interval": "PT1H"},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 403
    r = await org.client.post(
        "/v1/followup-policies",
        json={"name": "x", "lead_status": "new", "interval": "tomorrow"},
        headers=org.auth(),
    )
    assert r.status_code == 422


async def test_deal_stage_cadence_creates_tasks_for_the_deal_owner(org: Org, worker: None) -> None:
    rep, rep_key = await org.add_user("rep")
    pipeline = (await org.client.get("/v1/pipelines", headers=org.auth())).json()[0]
    stages = (await org.client.get(f"/v1/pipelines/{pipeline['id']}", headers=org.auth())).json()["stages"]
    first = stages[0]
    r = await org.client.post(
        "/v1/followup-policies",
        json={
            "name": "Prospects",
            "deal_stage_id": first["id"],
            "interval": "P1D",
            "task_subject": "Qualify",
        },
        headers=org.auth(),
    )
    assert r.status_code == 201, r.text
    deal = (
        await org.client.post("/v1/deals", json={"name": "Big one", "owner_id": rep}, headers=org.auth())
    ).json()

    async def deal_task() -> dict[str, Any] | None:
        r = await org.client.get(
            "/v1/tasks", params={"owner": "me", "done": "false"}, headers=org.auth(rep_key)
        )
        tasks = [t for t in r.json()["data"] if t["deal_id"] == deal["id"]]
        return tasks[0] if tasks else None

    task = await wait_for(deal_task, timeout=15)
    assert task["subject"] == "Qualify" and task["owner_id"] == rep and task["lead_id"] is None
    r = await org.client.post(
        f"/v1/tasks/{task['id']}/complete",
        json={"outcome": "Budget confirmed", "log_as": "meeting"},
        headers=org.auth(rep_key),
    )
    assert r.status_code == 200, r.text
    assert r.json()["task"]["done_at"] is not None

    async def next_deal_task() -> dict[str, Any] | None:
        t = await deal_task()
        return t if t and t["id"] != task["id"] else None

    following = await wait_for(next_deal_task, timeout=15)
    assert following["details"]["deal_stage_id"] == first["id"]
    gap = datetime.fromisoformat(following["due_at"]) - datetime.fromisoformat(r.json()["task"]["done_at"])
    assert abs(gap.total_seconds() - 86400) < 5


async def test_a_policy_names_a_status_or_a_stage_not_both(org: Org) -> None:
    pipeline = (await org.client.get("/v1/pipelines", headers=org.auth())).json()[0]
    stage = (await org.client.get(f"/v1/pipelines/{pipeline['id']}", headers=org.auth())).json()["stages"][0]
    r = await org.client.post(
        "/v1/followup-policies",
        json={"name": "x", "lead_status": "new", "deal_stage_id": stage["id"], "interval": "PT1H"},
        headers=org.auth(),
    )
    assert r.status_code == 422
    r = await org.client.post(
        "/v1/followup-policies", json={"name": "x", "interval": "PT1H"}, headers=org.auth()
    )
    assert r.status_code == 422


async def test_a_manager_sees_and_completes_only_the_tasks_of_their_team(org: Org) -> None:
    teams = []
    for name in ("North", "South"):
        r = await org.client.post("/v1/teams", json={"name": name}, headers=org.auth())
        teams.append(r.json()["id"])
    _, manager_key = await org.add_user("manager", team_id=teams[0])
    north_rep, _ = await org.add_user("rep", team_id=teams[0])
    south_rep, _ = await org.add_user("rep", team_id=teams[1])
    tasks = {}
    for name, rep in (("north", north_rep), ("south", south_rep)):
        lead = (
            await org.client.post(
                "/v1/leads", json={"email": f"{name}@t.example", "owner_id": rep}, headers=org.auth()
            )
        ).json()
        tasks[name] = (
            await org.client.post(
                f"/v1/leads/{lead['id']}/activities",
                json={"kind": "task", "subject": name, "due_at": "2030-01-01T00:00:00Z", "owner_id": rep},
                headers=org.auth(),
            )
        ).json()
    seen = (await org.client.get("/v1/tasks", headers=org.auth(manager_key))).json()["data"]
    assert [t["id"] for t in seen] == [tasks["north"]["id"]]
    r = await org.client.post(
        f"/v1/tasks/{tasks['south']['id']}/complete", json={"outcome": "x"}, headers=org.auth(manager_key)
    )
    assert r.status_code == 404
    r = await org.client.post(
        f"/v1/tasks/{tasks['north']['id']}/complete", json={"outcome": "done"}, headers=org.auth(manager_key)
    )
    assert r.status_code == 200, r.text
