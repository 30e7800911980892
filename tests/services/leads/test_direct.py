"""The intake fast path writes exactly what the session path writes, server defaults included."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, DateTime, MetaData, Numeric, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel, col

from app.db import direct_statements, tenant_session
from app.models.base import build
from app.models.intake import EventStatus, InboundEvent, SourceKind
from app.models.lead import Activity, ActivityKind, Lead, LeadSource
from app.models.organisation import OrganisationSettings
from app.models.outbox import OutboxEvent
from app.models.scoring import ScoringRule
from app.services import cache
from app.services.leads import batch
from app.services.leads.direct import as_row, insert_together, read_row, update_together
from app.services.leads.ingest import ingest, ingest_direct
from app.services.leads.normalise import LeadInput, normalise
from app.state import AppState
from tests.conftest import Org


class _ProbeBase(SQLModel):
    metadata = MetaData()  # not the app's: the migrations know nothing of this table


class _Probe(_ProbeBase, table=True):
    __tablename__ = "fast_path_probe"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    label: str | None = Field(default=None, sa_column_kwargs={"server_default": text("'from the server'")})
    note: str | None = None


async def test_a_column_with_a_server_default_keeps_it_on_the_fast_path(state: AppState) -> None:
    async with state.engine.begin() as conn:
        await conn.run_sync(_ProbeBase.metadata.create_all)
    try:
        fast, fast_given, orm = build(_Probe), build(_Probe, label="given"), build(_Probe)
        async with state.sessions() as session:
            async with direct_statements(session) as run:
                assert run is not None
                assert await insert_together(run, [as_row(fast)])
                assert await insert_together(run, [as_row(fast_given)])
            session.add(orm)
            await session.commit()
            rows = {r[0]: r[1] for r in await session.execute(select(col(_Probe.id), col(_Probe.label)))}
        assert rows == {fast.id: "from the server", fast_given.id: "given", orm.id: "from the server"}
    finally:
        async with state.engine.begin() as conn:
            await conn.run_sync(_ProbeBase.metadata.drop_all)


class _Typed(_ProbeBase, table=True):
    __tablename__ = "fast_path_typed"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    raw: bytes | None = None
    amount: Decimal | None = Field(default=None, sa_column=Column(Numeric(12, 2)))
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


async def test_every_value_type_survives_the_rows_json(state: AppState) -> None:
    """Rows travel as JSON (`row_json`): bytes, Decimal, a database UUID, a nested document, a
    None in a JSON column and an aware time come back as the ORM would have stored them."""
    async with state.engine.begin() as conn:
        await conn.run_sync(_ProbeBase.metadata.create_all)
    try:
        async with state.engine.connect() as conn:
            db_id = (await conn.execute(text("SELECT gen_random_uuid()"))).scalar_one()
        at = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Shanghai"))
        given = {
            "full": build(
                _Typed,
                id=db_id,
                raw=b"\x00\xff caf\xc3\xa9 \\x",
                amount=Decimal("1234.50"),
                details={"a": [1, "二", None], "b": {"c": 1.5}},
                at=at,
            ),
            "empty": build(_Typed, raw=b"", details=None),
        }
        async with state.sessions() as session, direct_statements(session) as run:
            assert run is not None
            for obj in given.values():
                assert await insert_together(run, [as_row(obj)])
        async with state.engine.connect() as conn:
            rows = {
                r[0]: r[1:]
                for r in await conn.execute(
                    text("SELECT id, raw, amount, details, details IS NULL, at FROM fast_path_typed")
                )
            }
        full, empty = rows[given["full"].id], rows[given["empty"].id]
        assert full == (
            b"\x00\xff caf\xc3\xa9 \\x",
            Decimal("1234.50"),
            {"a": [1, "二", None], "b": {"c": 1.5}},
            False,
            at,
        )
        # SQLAlchemy writes None in a JSON column as JSON null, not SQL NULL; so does the fast path.
        assert empty[0] == b"" and empty[2] is None and empty[3] is False
    finally:
        async with state.engine.begin() as conn:
            await conn.run_sync(_ProbeBase.metadata.drop_all)


def _input() -> LeadInput:
    data = LeadInput(
        source=LeadSource.web_form,
        name="  Wang Fang ",
        email="Wang.Fang@Example.com",
        phone="138 0013 8000",
        company="Acme 机器人",
        country="cn",
        message="Please call me back.",
        attributes={"plan": "pro"},
        tags=["web", "web", "expo"],
        source_detail={"source_name": "Contact us", "utm_source": "expo"},
    )
    assert normalise(data, default_regions=["CN"]) == []
    return data


_SKIP = {
    "id",
    "org_id",
    "lead_id",
    "created_at",
    "updated_at",
    "last_touch_at",
    "occurred_at",
    "available_at",
}


def _columns(obj: Any, skip: set[str] = _SKIP) -> dict[str, Any]:
    return {c.name: getattr(obj, c.key) for c in obj.__table__.columns if c.name not in skip}


async def _stored(state: AppState, org_id: uuid.UUID, lead_id: uuid.UUID) -> dict[str, Any]:
    async with tenant_session(state.sessions, org_id) as s:
        lead = await s.get(Lead, lead_id)
        touches = (await s.execute(select(Activity).where(col(Activity.lead_id) == lead_id))).scalars().all()
        events = (
            (await s.execute(select(OutboxEvent).where(col(OutboxEvent.event_type) == "lead.created")))
            .scalars()
            .all()
        )
        inbound = (await s.execute(select(InboundEvent))).scalars().all()
    assert lead is not None and len(touches) == 1 and len(events) == 1 and len(inbound) == 1
    assert touches[0].inbound_event_id == inbound[0].id
    assert events[0].payload["lead_id"] == str(lead_id) and events[0].payload["org_id"] == str(org_id)
    payload = {k: v for k, v in events[0].payload.items() if k not in ("lead_id", "org_id")}
    return {
        "lead": _columns(lead, _SKIP | {"assigned_at"}),
        "touch": _columns(touches[0], _SKIP | {"inbound_event_id"}),
        # (the session's worker may have dispatched one event and not yet the other)
        "event": {
            **_columns(events[0], _SKIP | {"payload", "dispatched_at", "attempts", "last_error"}),
            "payload": payload,
        },
        "inbound": {k: v for k, v in _columns(inbound[0], _SKIP | {"received_at", "processed_at"}).items()},
    }


async def test_fast_and_session_paths_store_identical_rows(state: AppState, org: Org, other_org: Org) -> None:
    settings = OrganisationSettings()
    stored = []
    for org_id, fast in ((uuid.UUID(org.id), True), (uuid.UUID(other_org.id), False)):
        async with tenant_session(state.sessions, org_id) as s:
            await cache.scoring_rules(s, org_id)  # warm, as intake's caches are: no transaction begun
        async with tenant_session(state.sessions, org_id) as s:
            event = build(
                InboundEvent, org_id=org_id, kind=SourceKind.form, headers={"user-agent": "test"}, body=b"x"
            )
            data = _input()
            data.source_detail["inbound_event_id"] = "fixed"  # the real one differs per event
            if fast:
                done = await ingest_direct(s, data, org_id=org_id, settings=settings, inbound_event=event)
                assert done is not None and done.event_written
            else:
                done = await ingest(
                    s, data, org_id=org_id, settings=settings, actor=None, inbound_event_id=event.id
                )
                assert not done.event_written
                event.lead_id, event.status, event.http_status = done.lead.id, EventStatus.created, 201
                s.add(event)
                await s.commit()
        stored.append(await _stored(state, org_id, done.lead.id))
    fast_rows, session_rows = stored
    assert fast_rows["lead"]["email"] == "wang.fang@example.com" and fast_rows["lead"]["tags"] == [
        "web",
        "expo",
    ]
    assert fast_rows == session_rows


def _first_touch() -> LeadInput:
    data = LeadInput(
        source=LeadSource.web_form,
        name="Wang Fang",
        email="wang.fang@example.com",
        attributes={"plan": "pro"},
        tags=["web"],
        source_detail={"source_name": "Contact us"},
    )
    assert normalise(data, default_regions=["CN"]) == []
    return data


def _second_touch() -> LeadInput:
    """The same address again: a company and a phone to fill, a name and a plan that conflict."""
    data = LeadInput(
        source=LeadSource.web_form,
        name="Fang Wang",
        email="WANG.FANG@example.com",
        phone="138 0013 8000",
        company="Acme 机器人",
        message="Second message.",
        attributes={"plan": "enterprise", "seats": "25"},
        tags=["expo", "web"],
        source_detail={"source_name": "Pricing", "inbound_event_id": "fixed"},
    )
    assert normalise(data, default_regions=["CN"]) == []
    return data


async def _merge_rows(state: AppState, org_id: uuid.UUID, lead_id: uuid.UUID) -> dict[str, Any]:
    async with tenant_session(state.sessions, org_id) as s:
        lead = await s.get(Lead, lead_id)
        touches = (
            (
                await s.execute(
                    select(Activity)
                    .where(col(Activity.lead_id) == lead_id)
                    .order_by(col(Activity.created_at))
                )
            )
            .scalars()
            .all()
        )
        inbound = (await s.execute(select(InboundEvent))).scalars().all()
    assert lead is not None and len(touches) == 2 and len(inbound) == 1
    assert touches[1].inbound_event_id == inbound[0].id and inbound[0].lead_id == lead_id
    columns = _columns(lead, _SKIP | {"assigned_at"})
    # each organisation has its own rule, with its own id
    columns["score_breakdown"] = [{**b, "rule_id": "the rule"} for b in columns["score_breakdown"]]
    return {
        "lead": columns,
        "touch": _columns(touches[1], _SKIP | {"inbound_event_id"}),
        "inbound": _columns(inbound[0], _SKIP | {"received_at", "processed_at"}),
    }


async def _with_rule(state: AppState, org_id: uuid.UUID) -> None:
    """A scoring rule a merge changes the outcome of (a company present), cached as intake's is."""
    async with tenant_session(state.sessions, org_id) as s:
        s.add(build(ScoringRule, name="Has company", field="company", operator="present", points=15))
        await s.commit()
    cache.forget_rules(org_id)
    async with tenant_session(state.sessions, org_id) as s:
        assert len(await cache.scoring_rules(s, org_id)) == 1


async def test_fast_and_session_merges_store_identical_rows(
    state: AppState, org: Org, other_org: Org
) -> None:
    """A post whose address is known is merged by `merge_direct` (no session) exactly as by the
    session's `merge`: the lead, its touch and the inbound event, column for column."""
    settings = OrganisationSettings()
    stored = []
    for org_id, fast in ((uuid.UUID(org.id), True), (uuid.UUID(other_org.id), False)):
        await _with_rule(state, org_id)
        async with tenant_session(state.sessions, org_id) as s:
            first = await ingest(s, _first_touch(), org_id=org_id, settings=settings, actor=None)
            await s.commit()
        async with tenant_session(state.sessions, org_id) as s:
            event = build(
                InboundEvent, org_id=org_id, kind=SourceKind.form, headers={"user-agent": "test"}, body=b"y"
            )
            data = _second_touch()
            if fast:
                done = await ingest_direct(s, data, org_id=org_id, settings=settings, inbound_event=event)
                assert done is not None and done.event_written and not done.created
                assert not s.in_transaction()  # nothing went through the session
            else:
                done = await ingest(
                    s, data, org_id=org_id, settings=settings, actor=None, inbound_event_id=event.id
                )
                event.lead_id, event.status, event.http_status = done.lead.id, EventStatus.merged, 200
                s.add(event)
                await s.commit()
        assert done.lead.id == first.lead.id and done.activity_id is not None
        stored.append(await _merge_rows(state, org_id, done.lead.id))
    fast_rows, session_rows = stored
    lead, touch = fast_rows["lead"], fast_rows["touch"]
    assert (lead["name"], lead["company"], lead["phone"]) == ("Wang Fang", "Acme 机器人", "+8613800138000")
    assert lead["attributes"] == {"plan": "pro", "seats": "25"} and lead["tags"] == ["web", "expo"]
    assert (lead["touch_count"], lead["version"], lead["score"]) == (2, 2, 15)
    assert touch["details"]["merged"] is True
    assert touch["details"]["conflicts"] == {"name": "Fang Wang", "attributes.plan": "enterprise"}
    assert fast_rows["inbound"]["status"] == EventStatus.merged and fast_rows["inbound"]["http_status"] == 200
    assert fast_rows == session_rows


async def test_a_known_full_form_merges_without_trying_to_insert(
    state: AppState, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A post with a name and a company looks up its fuzzy candidates anyway; that look-up also
    answers the open lead with the email, else the phone, and the post merges into it at once:
    no lead rows built, no insert sent (and refused). Without a name or a company the insert
    still finds the lead itself."""
    org_id = uuid.UUID(org.id)
    settings = OrganisationSettings()
    inserts: list[object] = []
    sent = batch.insert

    async def counted(*args: Any, **kwargs: Any) -> Any:
        inserts.append(args)
        return await sent(*args, **kwargs)

    monkeypatch.setattr(batch, "insert", counted)

    async def post(data: LeadInput) -> Any:
        async with tenant_session(state.sessions, org_id) as s:
            event = build(InboundEvent, org_id=org_id, kind=SourceKind.form, headers={}, body=b"z")
            done = await ingest_direct(s, data, org_id=org_id, settings=settings, inbound_event=event)
        assert done is not None and done.event_written
        return done

    first = await post(_second_touch())  # new: name, company, email and phone
    assert first.created and len(inserts) == 1
    again = await post(_second_touch())  # the same email
    by_phone = _second_touch()
    by_phone.email = "someone.else@example.com"  # a new email, the same phone
    by_phone_done = await post(by_phone)
    assert len(inserts) == 1  # neither repeat sent the insert
    bare = _first_touch()  # the same email, no company: the insert finds the lead
    bare_done = await post(bare)
    assert len(inserts) == 2
    for done in (again, by_phone_done, bare_done):
        assert not done.created and done.lead.id == first.lead.id
    async with tenant_session(state.sessions, org_id) as s:
        lead = await s.get(Lead, first.lead.id)
        events = (
            await s.execute(
                select(col(InboundEvent.status), col(InboundEvent.lead_id)).where(
                    col(InboundEvent.org_id) == org_id
                )
            )
        ).all()
    assert lead is not None and (lead.touch_count, lead.version) == (4, 4)
    assert sorted(str(status) for status, _ in events) == ["created", "merged", "merged", "merged"]
    assert {lead_id for _, lead_id in events} == {first.lead.id}


async def test_a_lead_changed_under_a_fast_merge_is_left_alone(state: AppState, org: Org) -> None:
    """`update_together` writes only over the version it read: once another transaction has
    changed the lead, nothing is written (no touch, no event) and the caller falls back."""
    org_id = uuid.UUID(org.id)
    settings = OrganisationSettings()
    async with tenant_session(state.sessions, org_id) as s:
        first = await ingest(s, _first_touch(), org_id=org_id, settings=settings, actor=None)
        await s.commit()
    async with state.sessions() as s, direct_statements(s) as run:
        assert run is not None
        read = await read_row(run, Lead, org_id, first.lead.id)
        assert read is not None
        lead, xmin = read
        assert lead.email == "wang.fang@example.com" and lead.attributes == {"plan": "pro"}
        async with tenant_session(state.sessions, org_id) as other:  # someone else, meanwhile
            await other.execute(
                text("UPDATE leads SET title = 'CTO' WHERE org_id = :o AND id = :i"),
                {"o": org_id, "i": lead.id},
            )
            await other.commit()
        lead.company = "Too late"
        touch = as_row(
            build(Activity, org_id=org_id, lead_id=lead.id, kind=ActivityKind.note, subject="touch")
        )
        assert not await update_together(run, lead, xmin, ("company",), [touch])
        fresh = await read_row(run, Lead, org_id, first.lead.id)
        assert fresh is not None and fresh[1] != xmin
        lead, xmin = fresh
        lead.company = "In time"
        assert await update_together(run, lead, xmin, ("company",), [touch])
    async with tenant_session(state.sessions, org_id) as s:
        stored = await s.get(Lead, first.lead.id)
        subjects = (
            (await s.execute(select(col(Activity.subject)).where(col(Activity.lead_id) == first.lead.id)))
            .scalars()
            .all()
        )
    assert stored is not None and (stored.company, stored.title) == ("In time", "CTO")
    assert subjects.count("touch") == 1  # written once, with the second try
