"""Taking a lead in: exact dedupe on email/phone (merge), fuzzy name+company (flag), lead.created.

Every way in (API, forms, email, webhooks, import, replay) goes through `ingest`, so the rules
hold the same everywhere. Exact matches are serialised per organisation and key with a
transaction-scoped advisory lock, so two simultaneous posts of one address make one lead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rapidfuzz import fuzz
from sqlalchemy import Dialect, Table, TextClause, bindparam, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from app.db import SessionStatements, Statements, direct_statements
from app.models.base import build, column_values, utcnow
from app.models.intake import EventStatus, InboundEvent
from app.models.lead import OPEN_STATUSES, Activity, ActivityKind, Direction, Lead
from app.models.organisation import OrganisationSettings
from app.models.outbox import OutboxEvent
from app.models.scoring import ScoringRule
from app.security import Principal
from app.services import audit, outbox
from app.services.intake import cache as intake_cache
from app.services.leads.normalise import LeadInput
from app.services.leads.scoring import rescore, score

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


_LOCK_CALL = "loudou_lock_open_lead(:org, :email, :phone, :keys)"
_LOCK_AND_FIND = text(f"SELECT {_LOCK_CALL}")


def lock_keys(org_id: uuid.UUID, email: str | None, phone: str | None) -> list[str]:
    """The advisory lock keys of an email/phone in an organisation, sorted (no deadlocks)."""
    return sorted(
        f"lead:{org_id}:{name}:{value}" for name, value in (("email", email), ("phone", phone)) if value
    )


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
                .where(col(column) == value, *open_lead_filter())
                .order_by(col(Lead.created_at), col(Lead.id))
                .limit(1)
            )
        ).scalar_one_or_none()
        if found is not None:
            return found
    return None


_FUZZY_CANDIDATES = text(
    "SELECT id, name, company FROM leads"
    " WHERE org_id = :org AND id <> :exclude"
    " AND (company ILIKE :company ESCAPE '\\' OR name ILIKE :name ESCAPE '\\')"
    f" AND status IN ({', '.join(repr(s.value) for s in OPEN_STATUSES)})"
    " AND duplicate_of IS NULL AND deleted_at IS NULL AND erased_at IS NULL"
    f" ORDER BY created_at LIMIT {FUZZY_CANDIDATES}"
)


def _prefix_pattern(value: str) -> str:
    """`value` as a literal ILIKE prefix pattern."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def find_fuzzy(
    run: Statements,
    org_id: uuid.UUID,
    *,
    name: str | None,
    company: str | None,
    threshold: int,
    exclude: uuid.UUID,
) -> uuid.UUID | None:
    """An open lead whose "name company" scores at least `threshold` (rapidfuzz token-set ratio).

    Candidates are narrowed in SQL (same first letters of the company or of the name) so the
    comparison never scans the whole table.
    """
    if not name or not company:
        return None
    rows = await run.fetch(
        _FUZZY_CANDIDATES,
        {
            "org": org_id,
            "exclude": exclude,
            "company": _prefix_pattern(company[:3]),
            "name": _prefix_pattern(name.split()[0][:3]),
        },
    )
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
    """An ORM object's table and column values, for `insert_together` (read from the instance's
    dict where they are, as they are for an object from `build`)."""
    table: Table = obj.__table__
    stored = obj.__dict__
    return table, {c.name: stored[c.key] if c.key in stored else getattr(obj, c.key) for c in table.columns}


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
    fields, keep the rest, record the touch); flag a fuzzy name+company match; emit lead.created.

    A new lead from intake whose request has sent nothing to the database yet (the usual web
    form post) is written without the ORM, in one statement that is its own transaction: lock,
    look up, and insert the lead, its touch, its outbox event and its inbound event unless an
    open lead has the email or phone (`insert_together`, `direct_statements`). Everything else,
    and every merge, goes through the session."""
    now = utcnow()
    if inbound_event is not None:
        inbound_event_id = inbound_event.id
    if inbound_event is not None and actor is None and record_touch:
        rules = await intake_cache.scoring_rules(session, org_id)
        async with direct_statements(session) as direct:
            if direct is not None:
                new = await new_lead(
                    direct,
                    data,
                    org_id=org_id,
                    settings=settings,
                    rules=rules,
                    now=now,
                    inbound_event_id=inbound_event_id,
                )
                rows = new.rows(inbound_event)
                contact = (data.email, data.phone)
                if await insert_together(direct, rows, notify=_notify(), unless_open_lead=contact):
                    return new.ingested(inbound_event)
                # An open lead has this email or phone: merged below, in the session's transaction.
    run = SessionStatements(session)
    existing_id = await lock_and_find(run, org_id, email=data.email, phone=data.phone)
    existing = await session.get(Lead, existing_id) if existing_id is not None else None
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
    await insert_together(run, new.rows(inbound_event), notify=_notify())
    done = new.ingested(inbound_event)
    if actor is not None:  # a lead from intake is recorded by its inbound event
        lead = done.lead
        audit.record(
            session,
            actor=actor,
            entity="lead",
            entity_id=lead.id,
            action="create",
            changes={name: [None, value] for name, value in data.values().items()},
            org_id=org_id,
        )
    return done


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
            org_id=existing.org_id,
        )
    await session.flush()
    return Ingested(lead=existing, created=False, activity_id=activity.id)


@dataclass
class NewLead:
    """A new lead's rows, built before they are inserted: the lead, its touch, its outbox event."""

    lead: Lead
    lead_rows: list[tuple[Table, dict[str, Any]]]
    touch_id: uuid.UUID | None
    now: datetime

    def event_outcome(self) -> dict[str, Any]:
        """The inbound event's columns once it has made this lead."""
        return {
            "lead_id": self.lead.id,
            "status": EventStatus.created,
            "http_status": 201,
            "processed_at": self.now,
        }

    def rows(self, inbound_event: InboundEvent | None) -> list[tuple[Table, dict[str, Any]]]:
        """All rows to insert, the inbound event (marked created) last when there is one."""
        if inbound_event is None:
            return self.lead_rows
        table, event = as_row(inbound_event)
        return [*self.lead_rows, (table, {**event, **self.event_outcome()})]

    def ingested(self, inbound_event: InboundEvent | None) -> Ingested:
        """What `ingest` reports once the rows are in (the event object updated to match)."""
        if inbound_event is not None:
            for name, value in self.event_outcome().items():
                setattr(inbound_event, name, value)
        return Ingested(
            lead=self.lead,
            created=True,
            activity_id=self.touch_id,
            possible_duplicate_of=self.lead.possible_duplicate_of,
            event_written=inbound_event is not None,
        )


async def new_lead(
    run: Statements,
    data: LeadInput,
    *,
    org_id: uuid.UUID,
    settings: OrganisationSettings,
    rules: list[ScoringRule],
    now: datetime,
    inbound_event_id: uuid.UUID | None = None,
    record_touch: bool = True,
) -> NewLead:
    """Build a new lead (scored, flagged when its name and company look like another open
    lead's) with its touch and its lead.created outbox event; nothing is written."""
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
    lead.possible_duplicate_of = await find_fuzzy(
        run,
        org_id,
        name=lead.name,
        company=lead.company,
        threshold=settings.duplicate_match_threshold,
        exclude=lead.id,
    )
    score(lead, rules)
    rows = [as_row(lead)]
    touch_id: uuid.UUID | None = None
    if record_touch:
        fields = _touch_fields(
            lead, data, inbound_event_id=inbound_event_id, details={"source": data.source_detail}
        )
        table, touch = new_row(Activity, **fields)
        touch_id = touch["id"]
        rows.append((table, touch))
    rows.append(
        new_row(
            OutboxEvent,
            org_id=org_id,
            event_type="lead.created",
            payload={
                "lead_id": str(lead.id),
                "org_id": str(org_id),
                "source": str(lead.source),
                "source_id": _str_or_none(lead.source_id),
                "owner_id": _str_or_none(lead.owner_id),
                "team_id": _str_or_none(lead.team_id),
                "pooled": lead.pooled,
            },
            available_at=now,
        )
    )
    return NewLead(lead=lead, lead_rows=rows, touch_id=touch_id, now=now)


def _str_or_none(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _notify() -> str | None:
    return outbox.NOTIFY_CHANNEL if outbox.notify_due() else None


_TOGETHER: dict[tuple[tuple[str, ...], bool, bool], TextClause] = {}
_SQL_TYPES: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def _together_statement(tables: tuple[Table, ...], notify: bool, unless_open_lead: bool) -> TextClause:
    """`WITH new_0 AS (INSERT …), new_1 AS (INSERT …) SELECT pg_notify(…)`, built once per set of
    tables (building SQLAlchemy insert constructs per request costs more than the round trip).

    `unless_open_lead`: the statement first takes the lead locks and looks for an open lead
    (`loudou_lock_open_lead`, whose look-up sees what committed before it got the locks), inserts
    only when there is none, and answers the open lead's id (NULL when it inserted): lock, check
    and insert in one statement, which in autocommit is its own transaction, the locks held to
    its end."""
    key = (tuple(t.name for t in tables), notify, unless_open_lead)
    stmt = _TOGETHER.get(key)
    if stmt is None:
        parts: list[str] = []
        binds = []
        if unless_open_lead:
            parts.append(
                "found AS MATERIALIZED (SELECT loudou_lock_open_lead(:org, :email, :phone, :keys) AS id)"
            )
        for i, table in enumerate(tables):
            columns = list(table.columns)
            names = ", ".join(f'"{c.name}"' for c in columns)
            if unless_open_lead:  # INSERT … SELECT: each value typed, as VALUES would infer them
                values = ", ".join(f"CAST(:r{i}_{c.name} AS {c.type.compile(_SQL_TYPES)})" for c in columns)
                rows = f"SELECT {values} WHERE (SELECT id FROM found) IS NULL"
            else:
                rows = "VALUES (" + ", ".join(f":r{i}_{c.name}" for c in columns) + ")"
            parts.append(f'new_{i} AS (INSERT INTO "{table.name}" ({names}) {rows})')
            binds += [bindparam(f"r{i}_{c.name}", type_=c.type) for c in columns]
        wake = "pg_notify(:notify_channel, '')" if notify else "NULL"
        final = f"SELECT id, {wake} FROM found" if unless_open_lead else f"SELECT NULL, {wake}"
        stmt = text("WITH " + ", ".join(parts) + " " + final).bindparams(*binds)
        _TOGETHER[key] = stmt
    return stmt


async def insert_together(
    run: Statements,
    rows: list[tuple[Table, dict[str, Any]]],
    *,
    notify: str | None = None,
    unless_open_lead: tuple[str | None, str | None] | None = None,
) -> bool:
    """INSERT new rows of several tables in one round trip (data-modifying CTEs); foreign keys
    are checked at the end of the statement, so the order of `rows` does not matter. The rows
    stay outside the session (they are not tracked afterwards).

    With `unless_open_lead=(email, phone)` (the first row being the new lead), nothing is
    inserted when the organisation has an open lead with that email or phone; False then."""
    tables = tuple(table for table, _ in rows)
    params: dict[str, Any] = {
        f"r{i}_{c.name}": values[c.name] for i, (table, values) in enumerate(rows) for c in table.columns
    }
    if notify:
        params["notify_channel"] = notify
    if unless_open_lead is not None:
        org_id = rows[0][1]["org_id"]
        email, phone = unless_open_lead
        params.update(org=org_id, email=email, phone=phone, keys=lock_keys(org_id, email, phone))
    found = await run.fetchval(
        _together_statement(tables, bool(notify), unless_open_lead is not None), params
    )
    return found is None


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
