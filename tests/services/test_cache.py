"""The intake caches: an expired entry is loaded again by one post while the others use it."""

from __future__ import annotations

import asyncio
import time
import uuid

from app.db import tenant_session
from app.models.base import build
from app.models.scoring import ScoringRule
from app.services import cache
from app.state import AppState
from tests.conftest import Org


async def test_an_expired_entry_is_loaded_once_while_the_other_posts_use_the_old_value(
    state: AppState, org: Org
) -> None:
    org_id = uuid.UUID(org.id)
    cache.forget_rules(org_id)
    async with tenant_session(state.sessions, org_id) as s:
        old = await cache.scoring_rules(s, org_id)
    assert old == []
    async with tenant_session(state.sessions, org_id) as s:
        s.add(build(ScoringRule, name="Has company", field="company", operator="present", points=15))
        await s.commit()
    cache._rules[org_id] = (time.monotonic() - cache.TTL - 1, old)  # expired, not forgotten

    async with (
        tenant_session(state.sessions, org_id) as first,
        tenant_session(state.sessions, org_id) as second,
    ):
        loading = asyncio.create_task(cache.scoring_rules(first, org_id))
        await asyncio.sleep(0)  # the first post has begun loading and waits on the database
        assert first.in_transaction()
        assert await cache.scoring_rules(second, org_id) is old  # no load of its own
        assert not second.in_transaction()
        loaded = await loading
    assert [rule.name for rule in loaded] == ["Has company"]
    assert not first.in_transaction()  # the load's read-only transaction is over
    async with tenant_session(state.sessions, org_id) as s:
        assert await cache.scoring_rules(s, org_id) is loaded


async def test_a_forgotten_entry_is_loaded_at_once(state: AppState, org: Org) -> None:
    org_id = uuid.UUID(org.id)
    async with tenant_session(state.sessions, org_id) as s:
        await cache.scoring_rules(s, org_id)
        s.add(build(ScoringRule, name="Has email", field="email", operator="present", points=5))
        await s.commit()
    cache.forget_rules(org_id)
    async with tenant_session(state.sessions, org_id) as s:
        assert [rule.name for rule in await cache.scoring_rules(s, org_id)] == ["Has email"]
