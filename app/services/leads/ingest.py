"""Taking a lead in: exact dedupe on email/phone (merge), fuzzy name+company (flag), lead.created.

Every way in (API, forms, email, webhooks, import, replay) goes through `ingest`, so the rules
hold the same everywhere. Exact matches are serialised per organisation and key with a
transaction-scoped advisory lock, so two simultaneous posts of one address make one lead.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlmodel import col

from app.db import SessionStatements, Statements, direct_statements
from app.models.base import build, utcnow
from app.models.events import LeadCreated
from app.models.intake import EventStatus, InboundEvent
from app.models.lead import OPEN_LEAD, OPEN_LEAD_SQL, Activity, ActivityKind, Direction, Lead
from app.models.organisation import OrganisationSettings
from app.models.outbox import OutboxEvent
from app.models.scoring import ScoringRule
from app.security import Principal
from app.services import audit, outbox
from app.services import cache as intake_cache
from app.services.leads import batch
from app.services.leads.direct import (
    as_row,
    insert_together,
    lock_keys,
    new_row,
    read_row,
    update_together,
)
from app.services.leads.normalise import TEXT_FIELDS, LeadInput
from app.services.leads.scoring import rescore, score

FUZZY_CANDIDATES = 100  # per key: same company, same name (the LIMIT of loudou_fuzzy_candidates)


@dataclass
class Ingested:
    """What `ingest` did: a new lead, or a touch on an existing one."""

    lead: Lead
    created: bool
    activity_id: uuid.UUID | None
    possible_duplicate_of: uuid.UUID | None = None
    event_written: bool = False


_LOCK_CALL = "loudou_lock_open_lead(:org, :email, :phone, :keys)"
_LOCK_AND_FIND = text(f"SELECT {_LOCK_CALL}")


async def lock_and_find(
    run: Statements, org_id: uuid.UUID, *, email: str | None, phone: str | None
) -> uuid.UUID | None:
    """Take the transaction-scoped advisory locks of this email/phone in the organisation, then
    find the oldest open lead with the email, else the phone — one round trip.

    The database function (migration c3b1leads0001) takes the locks first and then looks up
    with a fresh snapshot (a VOLATILE plpgsql function), so a lead committed by a concurrent
    request holding the same lock is seen. Keys are sorted, so two requests never deadlock.
    """
    params = {"org": org_id, "email": email, "phone": phone, "keys": lock_keys(org_id, email, phone)}
    found = await run.fetchval(_LOCK_AND_FIND, params)
    return uuid.UUID(str(found)) if found is not None else None


async def find_exact(session: AsyncSession, *, email: str | None, phone: str | None) -> Lead | None:
    """The oldest open lead of the organisation with this email, else with this phone."""
    for column, value in ((Lead.email, email), (Lead.phone, phone)):
        if not value:
            continue
        found = (
            await session.execute(
                select(Lead)
                .where(col(column) == value, OPEN_LEAD)
                .order_by(col(Lead.created_at), col(Lead.id))
                .limit(1)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    return None


# The oldest FUZZY_CANDIDATES open leads with the same company key and as many with the same name
# key, as one row of two arrays, oldest first (decoding them costs a fraction of 200 rows); a lead
# with both keys comes twice, side by side (UNION ALL, migration speed0007costs), which the first
# best score below does not mind. The rows are sorted once for both arrays (speed0008onesort). A
# PL/pgSQL function (migration speed0006generic) so that each connection plans the look-up once.
_FUZZY_CANDIDATES = text("SELECT ids, labels FROM loudou_fuzzy_candidates(:org, :company, :name, :exclude)")


async def find_fuzzy(
    run: Statements,
    org_id: uuid.UUID,
    *,
    name: str | None,
    company: str | None,
    threshold: int,
    exclude: uuid.UUID,
) -> uuid.UUID | None:
    """An open lead whose "name company" scores at least `threshold` (rapidfuzz token-sort
    ratio), the oldest among the best.

    Candidates are the oldest FUZZY_CANDIDATES open leads with the same normalised company
    (case, punctuation and a trailing legal form ignored: `loudou_company_key`) and as many
    with the same normalised name (`loudou_name_key`), each an index range with a LIMIT
    (migration speed0001fuzz): the look-up costs the same on an empty table and on millions of
    leads.
    """
    if not name or not company:
        return None
    rows = await run.fetch(
        _FUZZY_CANDIDATES, {"org": org_id, "exclude": exclude, "company": company, "name": name}
    )
    ids, labels = rows[0]
    return best_match(name, company, ids or [], labels or [], threshold=threshold)


def best_match(
    name: str, company: str, ids: Sequence[Any], labels: Sequence[str], *, threshold: int
) -> uuid.UUID | None:
    """The candidate (`ids`, with their "name company" `labels`) whose label scores at least
    `threshold` against "`name` `company`", the first (oldest) among the best."""
    if not ids:
        return None
    # The best score at or above the threshold; on a tie the first, i.e. the oldest (rapidfuzz's
    # loop in C: a Python loop over the candidates cost several times the look-up).
    found = process.extractOne(
        f"{name} {company}".lower(),
        # One lower() over the labels joined (text cannot hold NUL), not one a candidate.
        "\0".join(labels).lower().split("\0"),
        scorer=fuzz.token_sort_ratio,
        score_cutoff=threshold,
        processor=None,
    )
    return uuid.UUID(str(ids[found[2]])) if found is not None else None


def _touch_subject(data: LeadInput) -> str:
    label = data.source_detail.get("source_name") or str(data.source)
    return f"{str(data.source).replace('_', ' ').capitalize()} touch via {label}"[:500]


def _touch_fields(
    lead: Lead, data: LeadInput, *, inbound_event_id: uuid.UUID | None, details: dict[str, Any]
) -> dict[str, Any]:
    kind = ActivityKind.email if str(data.source) == "email" else ActivityKind.note
    subject = data.source_detail.get("subject") or _touch_subject(data)
    return {
        "org_id": lead.org_id,
        "lead_id": lead.id,
        "kind": kind,
        "direction": Direction.inbound,
        "subject": str(subject)[:500],
        "body": data.message,
        "inbound_event_id": inbound_event_id,
        "message_id": data.source_detail.get("message_id"),
        "details": details,
    }


def touch_activity(
    lead: Lead, data: LeadInput, *, inbound_event_id: uuid.UUID | None, details: dict[str, Any]
) -> Activity:
    """The timeline entry recording one inbound touch."""
    return build(Activity, **_touch_fields(lead, data, inbound_event_id=inbound_event_id, details=details))


def fill_empty(lead: Lead, data: LeadInput) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill fields that are empty on the lead; report (filled, conflicting) values."""
    filled: dict[str, Any] = {}
    conflicts: dict[str, Any] = {}
    for name, value in data.values().items():
        current = getattr(lead, name)
        if name == "phone_raw" and lead.phone:  # a valid phone already; the raw one is a conflict
            current = lead.phone
        if current in (None, ""):
            setattr(lead, name, value)
            filled[name] = [None, value]
        elif current != value and name != "message":
            conflicts[name] = value
    for key, value in data.attributes.items():
        if key not in lead.attributes:
            lead.attributes = {**lead.attributes, key: value}
            filled[f"attributes.{key}"] = [None, value]
        elif lead.attributes[key] != value:
            conflicts[f"attributes.{key}"] = value
    new_tags = [t for t in data.tags if t not in lead.tags]
    if new_tags:
        lead.tags = [*lead.tags, *new_tags]
        filled["tags"] = new_tags
    return filled, conflicts


def touch_lead(lead: Lead, data: LeadInput, *, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a merge changes on the open lead before it is rescored: empty fields filled from
    `data`, one more touch, a new version. Returns the filled fields and the touch's details."""
    filled, conflicts = fill_empty(lead, data)
    lead.touch_count += 1
    lead.last_touch_at = now
    lead.updated_at = now
    lead.version += 1
    return filled, {"merged": True, "filled": filled, "conflicts": conflicts, "source": data.source_detail}


# The columns a merge may change (`touch_lead`, then the score): what `merge_direct` writes back.
MERGED_COLUMNS = (
    *TEXT_FIELDS,
    "phone_raw",
    "attributes",
    "tags",
    "touch_count",
    "last_touch_at",
    "updated_at",
    "version",
    "score",
    "score_breakdown",
)


async def merge_direct(
    run: Statements,
    lead_id: uuid.UUID,
    data: LeadInput,
    *,
    org_id: uuid.UUID,
    rules: list[ScoringRule],
    inbound_event: InboundEvent,
    now: datetime,
) -> Ingested | None:
    """`merge` without the session: read the open lead, change it as `merge` does, and write it
    back with its touch and `inbound_event` (marked merged) in one statement, only if nobody
    changed the lead since it was read (its `xmin`). None when the lead is no longer open or has
    changed: the caller then merges through the session, under the dedupe locks."""
    read = await read_row(run, Lead, org_id, lead_id, condition=OPEN_LEAD_SQL)
    if read is None:
        return None
    lead, xmin = read
    _, details = touch_lead(lead, data, now=now)
    score(lead, rules)
    touch = new_row(Activity, **_touch_fields(lead, data, inbound_event_id=inbound_event.id, details=details))
    outcome = {"lead_id": lead.id, "status": EventStatus.merged, "http_status": 200}
    table, event = as_row(inbound_event)
    if not await update_together(run, lead, xmin, MERGED_COLUMNS, [touch, (table, {**event, **outcome})]):
        return None
    for name, value in outcome.items():
        setattr(inbound_event, name, value)
    return Ingested(lead=lead, created=False, activity_id=touch[1]["id"], event_written=True)


async def ingest_direct(
    session: AsyncSession,
    data: LeadInput,
    *,
    org_id: uuid.UUID,
    settings: OrganisationSettings,
    inbound_event: InboundEvent,
) -> Ingested | None:
    """Take a lead from intake the fast way (`leads.direct`, `leads.batch`): lock, look up and
    insert the new lead, its touch, its lead.created event and `inbound_event` (marked created)
    in one statement that is its own transaction, shared with the other posts of this process
    that arrive meanwhile; when an open lead has the email or phone, merge into it with
    `merge_direct`. None when it must fall back to `ingest`: the session has begun a
    transaction, or the open lead changed under the merge."""
    rules = await intake_cache.scoring_rules(session, org_id)
    engine = session.bind
    if session.in_transaction() or not isinstance(engine, AsyncEngine):
        return None
    candidates: tuple[list[Any], list[str]] = ([], [])  # no name or no company: no fuzzy match
    if data.name and data.company:
        # The fuzzy look-up is due anyway: it also answers an open lead with the email or
        # phone, and a repeat submission goes straight to the merge.
        open_id, candidates = await batch.look_up(engine, org_id, data)
        if open_id is not None:
            return await _merge_direct(session, open_id, data, org_id, rules, inbound_event, utcnow())
    new = await new_lead(
        None,
        data,
        org_id=org_id,
        settings=settings,
        rules=rules,
        inbound_event_id=inbound_event.id,
        candidates=candidates,
    )
    table, event = as_row(inbound_event)
    rows = [*new.rows(), (table, {**event, **new.event_outcome()})]
    found = await batch.insert(engine, rows, contact=(data.email, data.phone), notify=_notify())
    if found is not None:
        return await _merge_direct(session, found, data, org_id, rules, inbound_event, new.now)
    for name, value in new.event_outcome().items():
        setattr(inbound_event, name, value)
    return new.ingested(event_written=True)


async def _merge_direct(
    session: AsyncSession,
    lead_id: uuid.UUID,
    data: LeadInput,
    org_id: uuid.UUID,
    rules: list[ScoringRule],
    inbound_event: InboundEvent,
    now: datetime,
) -> Ingested | None:
    async with direct_statements(session) as run:
        if run is None:
            return None
        return await merge_direct(
            run, lead_id, data, org_id=org_id, rules=rules, inbound_event=inbound_event, now=now
        )


async def ingest(
    session: AsyncSession,
    data: LeadInput,
    *,
    org_id: uuid.UUID,
    settings: OrganisationSettings,
    actor: Principal | None,
    inbound_event_id: uuid.UUID | None = None,
    record_touch: bool = True,
    insert_first: bool = False,
) -> Ingested:
    """Create the lead, or merge it into the open lead with the same email/phone (fill empty
    fields, keep the rest, record the touch); flag a fuzzy name+company match; emit lead.created.
    Everything through the session, in its transaction (intake tries `ingest_direct` first)."""
    now = utcnow()
    run = SessionStatements(session)
    if insert_first:
        # Bulk callers (CSV import) expect mostly new leads: lock, look up and insert in one round
        # trip inside the session's transaction, and merge below only when an open lead exists.
        rules = await intake_cache.scoring_rules(session, org_id)
        new = await new_lead(
            run, data, org_id=org_id, settings=settings, rules=rules, now=now, record_touch=record_touch
        )
        if await insert_together(
            run, new.rows(), notify=_notify(), unless_open_lead=(data.email, data.phone)
        ):
            _audit_create(session, new.lead, data, actor=actor, org_id=org_id)
            return new.ingested(event_written=False)
    existing_id = await lock_and_find(run, org_id, email=data.email, phone=data.phone)
    existing = await lock_lead(session, existing_id) if existing_id is not None else None
    if existing is not None:
        return await merge(session, existing, data, actor=actor, inbound_event_id=inbound_event_id, now=now)
    rules = await intake_cache.scoring_rules(session, org_id)
    new = await new_lead(
        run,
        data,
        org_id=org_id,
        settings=settings,
        rules=rules,
        now=now,
        inbound_event_id=inbound_event_id,
        record_touch=record_touch,
    )
    lead = new.lead
    session.add(lead)
    await session.flush()  # the lead first: its touch and later rows point at it
    if new.touch is not None:
        session.add(build(Activity, **new.touch[1]))
    await outbox.emit(session, new.created, org_id=org_id, available_at=now)
    _audit_create(session, lead, data, actor=actor, org_id=org_id)
    await session.flush()
    return new.ingested(event_written=False)


def _audit_create(
    session: AsyncSession, lead: Lead, data: LeadInput, *, actor: Principal | None, org_id: uuid.UUID
) -> None:
    if actor is not None:  # a lead from intake is recorded by its inbound event
        audit.record(
            session,
            actor=actor,
            entity="lead",
            entity_id=lead.id,
            action="create",
            changes={name: [None, value] for name, value in data.values().items()},
            org_id=org_id,
        )


async def lock_lead(session: AsyncSession, lead_id: uuid.UUID) -> Lead | None:
    """The lead, row-locked and re-read (not the identity map's copy), so a touch never bumps a
    stale version and two states never share an ETag."""
    return (
        await session.execute(
            select(Lead)
            .where(col(Lead.id) == lead_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def merge(
    session: AsyncSession,
    existing: Lead,
    data: LeadInput,
    *,
    actor: Principal | None,
    inbound_event_id: uuid.UUID | None,
    now: datetime,
) -> Ingested:
    """Record a touch on an existing open lead: fill its empty fields, keep the rest."""
    filled, details = touch_lead(existing, data, now=now)
    activity = touch_activity(existing, data, inbound_event_id=inbound_event_id, details=details)
    session.add(activity)
    await rescore(session, existing)
    if actor is not None:  # intake touches are recorded by their inbound event and activity
        audit.record(
            session,
            actor=actor,
            entity="lead",
            entity_id=existing.id,
            action="touch",
            changes=filled,
            org_id=existing.org_id,
        )
    await session.flush()
    return Ingested(lead=existing, created=False, activity_id=activity.id)


@dataclass
class NewLead:
    """A new lead, built before it is written: the lead, its touch, its lead.created event."""

    lead: Lead
    touch: tuple[Table, dict[str, Any]] | None  # as a row: the cheapest form for the fast path
    created: LeadCreated
    now: datetime

    def event_outcome(self) -> dict[str, Any]:
        """The inbound event's columns once it has made this lead."""
        return {
            "lead_id": self.lead.id,
            "status": EventStatus.created,
            "http_status": 201,
            "processed_at": self.now,
        }

    def rows(self) -> list[tuple[Table, dict[str, Any]]]:
        """The rows to insert without the ORM: the lead, its touch, its outbox event."""
        rows = [as_row(self.lead)]
        if self.touch is not None:
            rows.append(self.touch)
        outbox_row = new_row(
            OutboxEvent,
            org_id=self.lead.org_id,
            event_type=self.created.event_type,
            payload=self.created.payload(),
            available_at=self.now,
        )
        return [*rows, outbox_row]

    def ingested(self, *, event_written: bool) -> Ingested:
        """What `ingest` reports once the rows are in."""
        return Ingested(
            lead=self.lead,
            created=True,
            activity_id=self.touch[1]["id"] if self.touch is not None else None,
            possible_duplicate_of=self.lead.possible_duplicate_of,
            event_written=event_written,
        )


async def new_lead(
    run: Statements | None,
    data: LeadInput,
    *,
    org_id: uuid.UUID,
    settings: OrganisationSettings,
    rules: list[ScoringRule],
    now: datetime | None = None,
    inbound_event_id: uuid.UUID | None = None,
    record_touch: bool = True,
    candidates: tuple[Sequence[Any], Sequence[str]] | None = None,
) -> NewLead:
    """Build a new lead (scored, flagged when its name and company look like another open
    lead's) with its touch and its lead.created event; nothing is written. `candidates`: the
    fuzzy candidates when the caller has them already (`batch.look_up`)."""
    now = now or utcnow()
    lead = build(
        Lead,
        org_id=org_id,
        source=data.source,
        source_id=data.source_id,
        source_detail=data.source_detail,
        attributes=data.attributes,
        tags=list(dict.fromkeys(data.tags)),
        owner_id=data.owner_id,
        team_id=data.team_id,
        pooled=data.owner_id is None,
        assigned_at=now if data.owner_id else None,
        touch_count=1,
        last_touch_at=now,
        **data.values(),
    )
    threshold = settings.duplicate_match_threshold
    if candidates is None:
        assert run is not None, "new_lead needs a connection or the candidates"
        lead.possible_duplicate_of = await find_fuzzy(
            run, org_id, name=lead.name, company=lead.company, threshold=threshold, exclude=lead.id
        )
    elif lead.name and lead.company:
        lead.possible_duplicate_of = best_match(lead.name, lead.company, *candidates, threshold=threshold)
    score(lead, rules)
    touch = None
    if record_touch:
        fields = _touch_fields(
            lead, data, inbound_event_id=inbound_event_id, details={"source": data.source_detail}
        )
        touch = new_row(Activity, **fields)
    created = LeadCreated(
        lead_id=lead.id,
        org_id=org_id,
        source=str(lead.source),
        source_id=lead.source_id,
        owner_id=lead.owner_id,
        team_id=lead.team_id,
        pooled=lead.pooled,
    )
    return NewLead(lead=lead, touch=touch, created=created, now=now)


def _notify() -> str | None:
    return outbox.NOTIFY_CHANNEL if outbox.notify_due() else None


async def count_open_owned(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """Open leads a user owns (what the claim limit counts)."""
    return int(
        (
            await session.execute(
                select(func.count()).select_from(Lead).where(col(Lead.owner_id) == owner_id, OPEN_LEAD)
            )
        ).scalar_one()
    )
