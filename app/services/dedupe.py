"""Taking a lead in: exact dedupe on email/phone (merge), fuzzy name+company (flag), lead.created.

Every way in (API, forms, email, webhooks, import, replay) goes through `ingest`, so the rules
hold the same everywhere. Exact matches are serialised per organisation and key with a
transaction-scoped advisory lock, so two simultaneous posts of one address make one lead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi.encoders import jsonable_encoder
from rapidfuzz import fuzz
from sqlalchemy import Table, TextClause, bindparam, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from app.models.base import build, column_values, utcnow
from app.models.intake import EventStatus, InboundEvent
from app.models.lead import OPEN_STATUSES, Activity, ActivityKind, Direction, Lead
from app.models.organisation import OrganisationSettings
from app.models.outbox import OutboxEvent
from app.security import Principal
from app.services import audit, outbox
from app.services.normalise import TEXT_FIELDS, LeadInput
from app.services.scoring import rescore

FUZZY_CANDIDATES = 200


@dataclass
class Ingested:
    """What `ingest` did: a new lead, or a touch on an existing one."""

    lead: Lead
    created: bool
    activity_id: uuid.UUID | None
    possible_duplicate_of: uuid.UUID | None = None
    event_written: bool = False


_OPEN: tuple[Any, ...] = ()


def open_lead_filter() -> tuple[Any, ...]:
    """Leads that can still absorb a new touch: not converted, merged, deleted or erased."""
    global _OPEN
    if not _OPEN:  # built once: SQL expressions are immutable and cheap to reuse, not to build
        _OPEN = (
            col(Lead.status).in_([s.value for s in OPEN_STATUSES]),
            col(Lead.duplicate_of).is_(None),
            col(Lead.deleted_at).is_(None),
            col(Lead.erased_at).is_(None),
        )
    return _OPEN


_LOCK_AND_FIND = text("SELECT loudou_lock_open_lead(:org, :email, :phone, :keys)")


async def lock_and_find(
    session: AsyncSession, org_id: uuid.UUID, *, email: str | None, phone: str | None
) -> uuid.UUID | None:
    """Take the transaction-scoped advisory locks of this email/phone in the organisation, then
    find the oldest open lead with the email, else the phone — one round trip.

    The database function (migration c3b1leads0001) takes the locks first and then looks up
    with a fresh snapshot (a VOLATILE plpgsql function), so a lead committed by a concurrent
    request holding the same lock is seen. Keys are sorted, so two requests never deadlock.
    """
    keys = sorted(
        f"lead:{org_id}:{name}:{value}" for name, value in (("email", email), ("phone", phone)) if value
    )
    found = (
        await session.execute(_LOCK_AND_FIND, {"org": org_id, "email": email, "phone": phone, "keys": keys})
    ).scalar_one()
    return uuid.UUID(str(found)) if found is not None else None


async def find_exact(session: AsyncSession, *, email: str | None, phone: str | None) -> Lead | None:
    """The oldest open lead of the organisation with this email, else with this phone."""
    for column, value in ((Lead.email, email), (Lead.phone, phone)):
        if not value:
            continue
        found = (
            await session.execute(
                select(Lead)
                .where(col(column) == value, *open_lead_filter())
                .order_by(col(Lead.created_at), col(Lead.id))
                .limit(1)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    return None


async def find_fuzzy(
    session: AsyncSession, *, name: str | None, company: str | None, threshold: int, exclude: uuid.UUID
) -> uuid.UUID | None:
    """An open lead whose "name company" scores at least `threshold` (rapidfuzz token-set ratio).

    Candidates are narrowed in SQL (same first letters of the company or of the name) so the
    comparison never scans the whole table.
    """
    if not name or not company:
        return None
    probes = [col(Lead.company).ilike(company[:3] + "%"), col(Lead.name).ilike(name.split()[0][:3] + "%")]
    rows = (
        await session.execute(
            select(col(Lead.id), col(Lead.name), col(Lead.company))
            .where(or_(*probes), col(Lead.id) != exclude, *open_lead_filter())
            .order_by(col(Lead.created_at))
            .limit(FUZZY_CANDIDATES)
        )
    ).all()
    wanted = f"{name} {company}".lower()
    best: tuple[float, uuid.UUID | None] = (0.0, None)
    for lead_id, other_name, other_company in rows:
        if not other_name or not other_company:
            continue
        score = fuzz.token_sort_ratio(wanted, f"{other_name} {other_company}".lower())
        if score >= threshold and score > best[0]:
            best = (score, lead_id)
    return best[1]


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


def new_row(model: type[SQLModel], **values: Any) -> tuple[Table, dict[str, Any]]:
    """A new row of `model` as (table, column values) with the model's defaults filled in, for
    `insert_together`; much cheaper than an instrumented ORM object on the intake hot path."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table, column_values(model, values)


def as_row(obj: Any) -> tuple[Table, dict[str, Any]]:
    """An ORM object's table and column values, for `insert_together`."""
    table: Table = obj.__table__
    return table, {c.name: getattr(obj, c.key) for c in table.columns}


def fill_empty(lead: Lead, data: LeadInput) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill fields that are empty on the lead; report (filled, conflicting) values."""
    filled: dict[str, Any] = {}
    conflicts: dict[str, Any] = {}
    for name, value in data.values().items():
        current = getattr(lead, name)
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


async def ingest(
    session: AsyncSession,
    data: LeadInput,
    *,
    org_id: uuid.UUID,
    settings: OrganisationSettings,
    actor: Principal | None,
    inbound_event_id: uuid.UUID | None = None,
    inbound_event: InboundEvent | None = None,
    record_touch: bool = True,
) -> Ingested:
    """Create the lead, or merge it into the open lead with the same email/phone (fill empty
    fields, keep the rest, record the touch); flag a fuzzy name+company match; emit lead.created."""
    now = utcnow()
    existing_id = await lock_and_find(session, org_id, email=data.email, phone=data.phone)
    existing = await session.get(Lead, existing_id) if existing_id is not None else None
    if existing is not None:
        filled, conflicts = fill_empty(existing, data)
        existing.touch_count += 1
        existing.last_touch_at = now
        existing.updated_at = now
        existing.version += 1
        activity = touch_activity(
            existing,
            data,
            inbound_event_id=inbound_event_id,
            details={"merged": True, "filled": filled, "conflicts": conflicts, "source": data.source_detail},
        )
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
                org_id=org_id,
            )
        await session.flush()
        return Ingested(lead=existing, created=False, activity_id=activity.id)

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
    lead.possible_duplicate_of = await find_fuzzy(
        session, name=lead.name, company=lead.company, threshold=threshold, exclude=lead.id
    )
    await rescore(session, lead)
    rows = [as_row(lead)]
    touch_id: uuid.UUID | None = None
    if record_touch:
        fields = _touch_fields(
            lead, data, inbound_event_id=inbound_event_id, details={"source": data.source_detail}
        )
        table, touch = new_row(Activity, **fields)
        touch_id = touch["id"]
        rows.append((table, touch))
    if actor is not None:  # a lead from intake is recorded by its inbound event
        audit.record(
            session,
            actor=actor,
            entity="lead",
            entity_id=lead.id,
            action="create",
            changes={name: [None, getattr(lead, name)] for name in TEXT_FIELDS if getattr(lead, name)},
            org_id=org_id,
        )
    rows.append(
        new_row(
            OutboxEvent,
            org_id=org_id,
            event_type="lead.created",
            payload=jsonable_encoder(
                {
                    "lead_id": lead.id,
                    "org_id": org_id,
                    "source": str(lead.source),
                    "source_id": lead.source_id,
                    "owner_id": lead.owner_id,
                    "team_id": lead.team_id,
                    "pooled": lead.pooled,
                }
            ),
            available_at=now,
        )
    )
    if inbound_event is not None:
        inbound_event.lead_id = lead.id
        inbound_event.status = EventStatus.created
        inbound_event.http_status = 201
        inbound_event.processed_at = now
        rows.append(as_row(inbound_event))
    # The hot path of intake: the lead, its touch, its outbox event (and the inbound event) in one
    # statement, the relay woken by the same statement's NOTIFY.
    await insert_together(session, rows, notify=outbox.NOTIFY_CHANNEL)
    return Ingested(
        lead=lead,
        created=True,
        activity_id=touch_id,
        possible_duplicate_of=lead.possible_duplicate_of,
        event_written=inbound_event is not None,
    )


_TOGETHER: dict[tuple[tuple[str, ...], bool], TextClause] = {}


def _together_statement(tables: tuple[Table, ...], notify: bool) -> TextClause:
    """`WITH new_0 AS (INSERT …), new_1 AS (INSERT …) SELECT pg_notify(…)`, built once per set of
    tables (building SQLAlchemy insert constructs per request costs more than the round trip)."""
    key = (tuple(t.name for t in tables), notify)
    stmt = _TOGETHER.get(key)
    if stmt is None:
        parts: list[str] = []
        binds = []
        for i, table in enumerate(tables):
            columns = list(table.columns)
            names = ", ".join(f'"{c.name}"' for c in columns)
            values = ", ".join(f":r{i}_{c.name}" for c in columns)
            parts.append(f'new_{i} AS (INSERT INTO "{table.name}" ({names}) VALUES ({values}))')
            binds += [bindparam(f"r{i}_{c.name}", type_=c.type) for c in columns]
        final = "SELECT pg_notify(:notify_channel, '')" if notify else "SELECT 1"
        stmt = text("WITH " + ", ".join(parts) + " " + final).bindparams(*binds)
        _TOGETHER[key] = stmt
    return stmt


async def insert_together(
    session: AsyncSession, rows: list[tuple[Table, dict[str, Any]]], *, notify: str | None = None
) -> None:
    """INSERT new rows of several tables in one round trip (data-modifying CTEs); foreign keys
    are checked at the end of the statement, so the order of `rows` does not matter. The rows
    stay outside the session (they are not tracked afterwards)."""
    tables = tuple(table for table, _ in rows)
    params: dict[str, Any] = {
        f"r{i}_{c.name}": values[c.name] for i, (table, values) in enumerate(rows) for c in table.columns
    }
    if notify:
        params["notify_channel"] = notify
    await session.execute(_together_statement(tables, bool(notify)), params)


async def count_open_owned(session: AsyncSession, owner_id: uuid.UUID) -> int:
    """Open leads a user owns (what the claim limit counts)."""
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(Lead)
                .where(col(Lead.owner_id) == owner_id, *open_lead_filter())
            )
        ).scalar_one()
    )
