"""Short-lived per-process caches for the intake hot path, shared by intake and leads: sources by
key, organisation settings, scoring rules. Each entry lives `TTL` seconds; a write made through
this process forgets the entry at once, so other processes see a change within `TTL` seconds
(plus one load's time: while one post loads an expired entry, the others use the old value).
Cached rows are detached from the session that loaded them (read-only snapshots). Hand-written
because the cached values are ORM rows that must be loaded through the caller's session on a miss.

A miss on a session that had not begun a transaction ends the read-only transaction the load
began (`_reading`): otherwise every intake post that refreshes an entry (each TTL, in each
process, and all the posts in flight at that moment) would find its session in a transaction
and leave the one-statement fast path for the session path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.intake import IntakeSource
from app.models.organisation import Organisation, OrganisationSettings
from app.models.scoring import ScoringRule

TTL = 5.0

_sources: dict[str, tuple[float, IntakeSource | None]] = {}
_settings: dict[uuid.UUID, tuple[float, OrganisationSettings]] = {}
_rules: dict[uuid.UUID, tuple[float, list[ScoringRule]]] = {}


def _fresh(entry: tuple[float, object] | None) -> bool:
    return entry is not None and time.monotonic() - entry[0] < TTL


def _refreshing(cache: dict[Any, tuple[float, Any]], key: Any) -> None:
    """Before a stale entry is loaded again, stamp it fresh: the posts that arrive while this
    one loads use the old value (at most one load's time older) instead of each loading it too.
    Under load every post in flight when an entry expired loaded it, each through a session
    transaction of its own."""
    entry = cache.get(key)
    if entry is not None:
        cache[key] = (time.monotonic(), entry[1])


@asynccontextmanager
async def _reading(session: AsyncSession) -> AsyncIterator[None]:
    """Load on a miss; if the session was idle (no transaction, nothing pending), end the
    transaction the load began, so the session is idle again."""
    idle = not session.in_transaction() and not (session.new or session.dirty or session.deleted)
    yield
    if idle and session.in_transaction():
        await session.commit()


async def source_by_key(session: AsyncSession, key: str) -> IntakeSource | None:
    """The source with this public key (any organisation, any state), or None."""
    entry = _sources.get(key)
    if entry is not None and _fresh(entry):
        return entry[1]
    _refreshing(_sources, key)
    async with _reading(session):
        source = (
            await session.execute(
                select(IntakeSource).where(col(IntakeSource.key) == key).execution_options(cross_tenant=True)
            )
        ).scalar_one_or_none()
        if source is not None:
            # Detached at once: a rollback of this request must not expire the shared copy.
            session.expunge(source)
    if len(_sources) > 10_000:
        _sources.clear()
    _sources[key] = (time.monotonic(), source)
    return source


def forget_source(key: str) -> None:
    """Drop a source from the cache (after it changed)."""
    _sources.pop(key, None)


async def org_settings(session: AsyncSession, org_id: uuid.UUID) -> OrganisationSettings:
    """The organisation's typed settings."""
    entry = _settings.get(org_id)
    if entry is not None and _fresh(entry):
        return entry[1]
    _refreshing(_settings, org_id)
    async with _reading(session):
        org = await session.get(Organisation, org_id)
        settings = org.typed_settings() if org is not None else OrganisationSettings()
    _settings[org_id] = (time.monotonic(), settings)
    return settings


def forget_settings(org_id: uuid.UUID) -> None:
    """Drop an organisation's settings from the cache."""
    _settings.pop(org_id, None)


async def scoring_rules(session: AsyncSession, org_id: uuid.UUID) -> list[ScoringRule]:
    """The organisation's active scoring rules, oldest first."""
    entry = _rules.get(org_id)
    if entry is not None and _fresh(entry):
        return entry[1]
    _refreshing(_rules, org_id)
    async with _reading(session):
        rules = list(
            (
                await session.execute(
                    select(ScoringRule)
                    .where(col(ScoringRule.active).is_(True), col(ScoringRule.org_id) == org_id)
                    .order_by(col(ScoringRule.created_at), col(ScoringRule.id))
                )
            ).scalars()
        )
        for rule in rules:
            session.expunge(rule)
    _rules[org_id] = (time.monotonic(), rules)
    return rules


def forget_rules(org_id: uuid.UUID) -> None:
    """Drop an organisation's scoring rules from the cache (after a rule changed)."""
    _rules.pop(org_id, None)
