"""Intake posts that arrive together are written together (`leads.batch`): each post still gets
its own answer and its own rows, posts that share an email or phone never share a statement, and
a post PostgreSQL refuses fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.db import engine_statements
from app.models.lead import LeadSource
from app.services.leads import batch, direct
from app.services.leads.batch import Batcher
from app.services.leads.normalise import LeadInput
from app.state import AppState
from tests.conftest import Org
from tests.routers.test_intake_reliability import warm_form


def _form(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": f"batch-{i}@example.com",
        "phone": f"+86 138 0000 {i:04d}",
        "name": f"Person {i}",
        "company": f"Company {i % 3}",
        "message": f"Message {i}",
        **extra,
    }


Sent = list[list[tuple[str | None, str | None]]]
HOLD = "hold-"  # the email prefix of the posts `queued_together` holds statements with


@pytest.fixture
def gate() -> asyncio.Event:
    """Opens the insert statements of `HOLD` posts (open unless a test holds them)."""
    return asyncio.Event()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch, gate: asyncio.Event) -> Sent:
    """Each insert statement the batcher sends: its posts' (email, phone). A statement of a
    `HOLD` post waits for `gate` before it runs."""
    sent: Sent = []
    insert_batch = direct.insert_batch

    async def recorded(run: Any, posts: Any, **kwargs: Any) -> list[Any]:
        contacts = [contact for _, contact in posts]
        sent.append(contacts)
        if any(email and email.startswith(HOLD) for email, _ in contacts):
            await asyncio.wait_for(gate.wait(), 30)
        return await insert_batch(run, posts, **kwargs)

    monkeypatch.setattr(batch, "insert_batch", recorded)
    return sent


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def queued_together(
    state: AppState,
    org: Org,
    endpoint: str,
    bodies: list[dict[str, Any]],
    statements: Sent,
    gate: asyncio.Event,
) -> list[httpx.Response]:
    """Post `bodies` at once while every insert statement the process may run is held by a
    `HOLD` post, so that all of them are queued when the statements open: what the batcher does
    under load, without depending on how the posts' requests happen to interleave."""
    inserts = batch.intake_batches(state.engine).inserts
    statements.clear()
    holders = []
    for i in range(inserts.in_flight):  # one at a time, so that each has a statement of its own
        holders.append(
            asyncio.create_task(org.client.post(endpoint, json={"email": f"{HOLD}{i}@example.com"}))
        )
        await _until(lambda: len(statements) == len(holders), "the held statements")
    posts = [asyncio.create_task(org.client.post(endpoint, json=body)) for body in bodies]
    await _until(lambda: len(inserts._pending) == len(bodies), "every post queued")
    gate.set()
    assert all(r.status_code == 201 for r in await asyncio.gather(*holders))
    del statements[: inserts.in_flight]
    return list(await asyncio.gather(*posts))


async def _rows(state: AppState, org_id: str) -> dict[str, Any]:
    async with state.engine.connect() as conn:
        leads = (
            await conn.execute(
                text("SELECT id, email, phone, name, message FROM leads WHERE org_id = :o"), {"o": org_id}
            )
        ).all()
        events = (
            await conn.execute(
                text("SELECT status, lead_id, body FROM inbound_events WHERE org_id = :o"), {"o": org_id}
            )
        ).all()
        touches = (
            await conn.execute(text("SELECT lead_id, body FROM activities WHERE org_id = :o"), {"o": org_id})
        ).all()
        created = (
            await conn.execute(
                text(
                    "SELECT payload->>'lead_id' FROM outbox WHERE org_id = :o AND event_type = 'lead.created'"
                ),
                {"o": org_id},
            )
        ).all()
    return {"leads": leads, "events": events, "touches": touches, "created": created}


async def test_concurrent_posts_share_statements_and_each_gets_its_own_lead(
    state: AppState, org: Org, statements: Sent, gate: asyncio.Event
) -> None:
    source = await warm_form(org)
    earlier = await org.client.post(
        source["endpoint"], json=_form(0, email="earlier@example.com", phone="+86 139 0000 0000")
    )
    assert earlier.status_code == 201, earlier.text
    statements.clear()
    posts = [_form(i) for i in range(24)]
    answers = await queued_together(state, org, source["endpoint"], posts, statements, gate)
    assert [r.status_code for r in answers] == [201] * 24, [r.text for r in answers if r.status_code != 201]
    # The posts queued together went in together, in one statement, in the order they queued.
    assert len(statements) == 1 and sorted(statements[0]) == sorted(
        (body["email"], "+86" + body["phone"][4:].replace(" ", "")) for body in posts
    ), statements
    rows = await _rows(state, org.id)
    by_id = {lead.id: lead for lead in rows["leads"]}
    for body, r in zip(posts, answers, strict=True):
        lead = by_id[uuid.UUID(r.json()["lead_id"])]  # each answer names the lead of its own post
        assert (lead.email, lead.name, lead.message) == (body["email"], body["name"], body["message"])
    events = {(str(e.lead_id), e.status) for e in rows["events"] if e.lead_id is not None}
    assert {(r.json()["lead_id"], "created") for r in answers} <= events
    touched = {str(t.lead_id): t.body for t in rows["touches"]}
    assert all(
        touched[r.json()["lead_id"]] == body["message"] for body, r in zip(posts, answers, strict=True)
    )
    assert {r.json()["lead_id"] for r in answers} <= {row[0] for row in rows["created"]}
    # The lead of the same name and company posted before is flagged, as for a post alone.
    assert answers[0].json().get("possible_duplicate_of") == earlier.json()["lead_id"], answers[0].json()


async def test_posts_that_share_an_email_or_phone_never_share_a_statement(
    state: AppState, org: Org, statements: Sent
) -> None:
    source = await warm_form(org)
    same_email = [{"email": "same@example.com", "message": f"m{i}"} for i in range(5)]
    same_phone = [{"phone": "+86 139 1111 2222", "email": f"p{i}@example.com"} for i in range(4)]
    others = [{"email": f"other-{i}@example.com"} for i in range(10)]
    bodies = [b for trio in zip(same_email, same_phone, others, strict=False) for b in trio] + others[4:]
    bodies.append(same_email[4])
    answers = await asyncio.gather(*(org.client.post(source["endpoint"], json=b) for b in bodies))
    assert all(r.status_code in (200, 201) for r in answers), [r.text for r in answers]
    for sent in statements:
        emails = [email for email, _ in sent if email]
        phones = [phone for _, phone in sent if phone]
        assert len(emails) == len(set(emails)) and len(phones) == len(set(phones)), sent
    rows = await _rows(state, org.id)
    emails = [lead.email for lead in rows["leads"]]
    assert emails.count("same@example.com") == 1
    assert sum(1 for lead in rows["leads"] if lead.phone == "+8613911112222") == 1
    assert len(rows["leads"]) == 1 + 1 + 1 + 10  # warm-up, same email, same phone, the others
    same = [r for b, r in zip(bodies, answers, strict=True) if b.get("email") == "same@example.com"]
    assert sorted(r.status_code for r in same) == [200, 200, 200, 200, 201]
    assert len({r.json()["lead_id"] for r in same}) == 1


async def test_one_post_postgres_refuses_fails_alone(
    state: AppState, org: Org, statements: Sent, gate: asyncio.Event
) -> None:
    """A NUL byte (text PostgreSQL cannot store) in one post: its batch is refused as a whole,
    each of its posts is sent again alone, and only that post is a 422 (its event kept)."""
    source = await warm_form(org)
    bodies = [_form(100 + i) for i in range(12)]
    bodies[5]["message"] = "hello\u0000world"
    answers = await queued_together(state, org, source["endpoint"], bodies, statements, gate)
    codes = [r.status_code for r in answers]
    assert codes == [201] * 5 + [422] + [201] * 6, [r.text for r in answers]
    assert answers[5].json()["code"] == "unstorable_value"
    # It was refused inside the statement of all twelve (then each went alone), not alone.
    assert len(statements) == 1 and (bodies[5]["email"], "+8613800000105") in statements[0], statements
    rows = await _rows(state, org.id)
    assert sorted(lead.email for lead in rows["leads"]) == sorted(
        [
            "warm-up@example.com",
            *(f"{HOLD}{i}@example.com" for i in range(batch.IN_FLIGHT)),
            *(b["email"] for i, b in enumerate(bodies) if i != 5),
        ]
    )
    rejected = [e for e in rows["events"] if e.status == "rejected"]
    assert len(rejected) == 1 and rejected[0].lead_id is None and b"hello" in rejected[0].body


async def test_posts_of_two_organisations_in_one_statement_stay_apart(
    state: AppState, org: Org, other_org: Org, statements: Sent
) -> None:
    """The same address posted to two organisations at once: a lead in each (the locks and the
    open-lead look-up are per organisation), each answer naming its own organisation's lead."""
    mine, theirs = await warm_form(org), await warm_form(other_org)
    body = {"email": "both@example.com", "name": "Both", "company": "Shared Co"}
    answers = await asyncio.gather(
        *(
            client.post(source["endpoint"], json=body)
            for client, source in [(org.client, mine), (other_org.client, theirs)] * 3
        )
    )
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 200, 201, 201]
    for owner in (org, other_org):
        rows = await _rows(state, owner.id)
        ids = [lead.id for lead in rows["leads"] if lead.email == "both@example.com"]
        assert len(ids) == 1
        mine_answers = {r.json()["lead_id"] for r in answers[(0 if owner is org else 1) :: 2]}
        assert mine_answers == {str(ids[0])}


async def _echo(run: Any, items: list[int]) -> list[int]:
    await asyncio.sleep(0.01)
    return [item * 10 for item in items]


async def _echo_alone(run: Any, item: int) -> int:
    return item * 10


async def test_the_batcher_keeps_order_limit_and_keys(
    state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items that arrive while a statement runs go in the next one, in order, up to the limit;
    two items with one key never go together; every caller gets its own item's result."""
    sent: list[list[int]] = []

    async def send(run: Any, items: list[int]) -> list[int]:
        sent.append(items)
        return await _echo(run, items)

    batcher: Batcher[int, int] = Batcher(
        state.engine, send, _echo_alone, keys=lambda item: [item % 7], limit=4, in_flight=1
    )
    results = await asyncio.gather(*(batcher.submit(i) for i in range(15)))
    assert results == [i * 10 for i in range(15)]
    assert sorted(i for items in sent for i in items) == list(range(15))
    assert all(len(items) <= 4 for items in sent) and len(sent) < 15
    assert all(len({i % 7 for i in items}) == len(items) for items in sent), sent
    assert sent[0] == [0, 1, 2, 3]  # what was asked before the first statement went
    assert await batcher.submit(99) == 990 and sent[-1] == [99]  # alone: it waits for nobody


async def test_a_batch_that_fails_is_sent_again_item_by_item(state: AppState) -> None:
    import asyncpg

    async def refuse(run: Any, items: list[int]) -> list[int]:
        raise asyncpg.DataError("refused as a whole")

    async def alone(run: Any, item: int) -> int:
        if item == 3:
            raise asyncpg.DataError("three is refused")
        return item

    batcher: Batcher[int, int] = Batcher(state.engine, refuse, alone, in_flight=1)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert outcomes[:3] == [0, 1, 2] and outcomes[4:] == [4, 5]
    assert isinstance(outcomes[3], asyncpg.DataError) and "three" in str(outcomes[3])


async def test_the_fast_path_needs_no_connection_while_it_waits(
    state: AppState, org: Org, client: httpx.AsyncClient
) -> None:
    """More posts at once than the pool has connections: they all go in (a post waiting for its
    batch holds no connection the batch would need)."""
    source = await warm_form(org)
    many = state.settings.db_pool_size + state.settings.db_max_overflow + 10
    answers = await asyncio.gather(
        *(org.client.post(source["endpoint"], json={"email": f"pool-{i}@example.com"}) for i in range(many))
    )
    assert [r.status_code for r in answers] == [201] * many


async def test_a_lost_connection_fails_the_batch_without_retrying_on_it(state: AppState) -> None:
    """Not a refusal but the connection failing: every post of the batch gets the error (a 503
    for intake, tests/routers/test_intake_reliability.py) and nothing is sent again on it."""
    retried: list[int] = []

    async def lost(run: Any, items: list[int]) -> list[int]:
        raise ConnectionResetError("connection lost")

    async def alone(run: Any, item: int) -> int:
        retried.append(item)
        return item

    batcher: Batcher[int, int] = Batcher(state.engine, lost, alone, in_flight=1)
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert all(isinstance(o, ConnectionResetError) for o in outcomes) and retried == []


# --- The batch look-ups answer what the one-post functions answer -----------------------------

_STATUSES = ["new", "working", "qualified", "unqualified", "converted"]


async def _varied_leads(state: AppState, orgs: list[uuid.UUID]) -> None:
    """Leads of two organisations that reach every branch of the look-ups: open and closed, a
    duplicate and a deleted one, shared emails and phones (oldest wins, ties by id), no name or no
    company, company keys with more than 100 open leads (the limit), names that differ only in
    case and punctuation."""
    rows = []
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for n in range(1600):
        org = orgs[n % 2]
        created = base + timedelta(minutes=n // 3)  # three leads share each minute
        rows.append(
            (
                uuid.uuid4(),
                org,
                _STATUSES[n % 5] if n % 7 else "new",
                f"Person {n % 40}" if n % 11 else (f"person-{n % 40}" if n % 2 else None),
                f"Company {n % 4} Ltd" if n % 13 else (f"COMPANY {n % 4}" if n % 2 else None),
                f"shared-{n % 50}@example.com" if n % 3 else None,
                f"+8613800{n % 60:06d}" if n % 5 else None,
                created,
                created if n % 17 else base,  # deleted
            )
        )
    async with state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO leads (id, org_id, status, source, source_detail, attributes, tags, score,"
                " score_breakdown, pooled, touch_count, name, company, email, phone, created_at,"
                " updated_at, version, deleted_at)"
                " SELECT r.id, r.org, r.status, 'web_form', '{}', '{}', '[]', 0, '[]', true, 1, r.name,"
                " r.company, r.email, r.phone, r.created, r.created, 1,"
                " CASE WHEN r.deleted = TIMESTAMPTZ '2025-01-01 00:00+00' THEN r.created END"
                " FROM unnest(CAST(:ids AS uuid[]), CAST(:orgs AS uuid[]), CAST(:statuses AS text[]),"
                " CAST(:names AS text[]), CAST(:companies AS text[]), CAST(:emails AS text[]),"
                " CAST(:phones AS text[]), CAST(:created AS timestamptz[]), CAST(:deleted AS timestamptz[]))"
                " AS r(id, org, status, name, company, email, phone, created, deleted)"
            ),
            {
                key: [row[i] for row in rows]
                for i, key in enumerate(
                    [
                        "ids",
                        "orgs",
                        "statuses",
                        "names",
                        "companies",
                        "emails",
                        "phones",
                        "created",
                        "deleted",
                    ]
                )
            },
        )
        # A lead that is someone's duplicate is not open either.
        await conn.execute(
            text(
                "UPDATE leads SET duplicate_of = (SELECT id FROM leads AS o WHERE o.org_id = leads.org_id"
                " ORDER BY o.created_at, o.id LIMIT 1) WHERE org_id = ANY(CAST(:orgs AS uuid[]))"
                " AND email LIKE 'shared-1%'"
            ),
            {"orgs": orgs},
        )


def _posts(orgs: list[uuid.UUID]) -> list[tuple[uuid.UUID, str | None, str | None, str | None, str | None]]:
    """Posts of both organisations: known and unknown emails and phones, both or neither, names and
    companies that match many, one or no open lead, and missing ones."""
    posts = []
    for n in range(90):
        posts.append(
            (
                orgs[n % 2] if n % 9 else orgs[(n + 1) % 2],
                f"shared-{n % 70}@example.com" if n % 4 else None,
                f"+8613800{(n * 7) % 80:06d}" if n % 3 else None,
                [f"Company {n % 4} Ltd", f"company {n % 4}", "Nobody Inc", None][n % 4],
                [f"Person {n % 40}", f"PERSON {n % 45}.", None, "Someone Else"][(n // 4) % 4],
            )
        )
    return posts


async def test_the_batch_look_up_answers_each_post_what_the_one_post_look_up_answers(
    state: AppState, org: Org, other_org: Org
) -> None:
    orgs = [uuid.UUID(org.id), uuid.UUID(other_org.id)]
    await _varied_leads(state, orgs)
    posts = _posts(orgs)
    nothing = uuid.UUID(int=0)
    async with state.engine.connect() as conn:
        alone = [
            tuple(
                (
                    await conn.execute(
                        text(
                            "SELECT open_id, ids, labels FROM loudou_intake_candidates(:o, :e, :p, :c, :n, :x)"
                        ),
                        {"o": o, "e": e, "p": p, "c": c, "n": n, "x": nothing},
                    )
                ).one()
            )
            for o, e, p, c, n in posts
        ]
    async with engine_statements(state.engine) as run:
        together = await batch.look_up_many(
            run,
            [
                (o, LeadInput(LeadSource.web_form, email=e, phone=p, company=c, name=n))
                for o, e, p, c, n in posts
            ],
        )
    assert [(open_id, ids or [], labels or []) for open_id, ids, labels in alone] == [
        (open_id, list(ids), list(labels)) for open_id, (ids, labels) in together
    ]
    # The data reaches every branch: open leads by email and by phone only, full candidate lists
    # (the limit), short ones, and none.
    assert sum(1 for open_id, _, _ in alone if open_id is not None) >= 20
    assert any(
        e is None and open_id is not None
        for (_, e, _, _, _), (open_id, _, _) in zip(posts, alone, strict=True)
    )
    assert any(ids is not None and len(ids) > 100 for _, ids, _ in alone)  # a key's 100: the limit
    assert any(ids is not None and 0 < len(ids) < 100 for _, ids, _ in alone)
    assert any(open_id is None and ids is None for open_id, ids, _ in alone)


async def test_the_batch_lock_finds_each_post_what_the_one_post_lock_finds(
    state: AppState, org: Org, other_org: Org
) -> None:
    orgs = [uuid.UUID(org.id), uuid.UUID(other_org.id)]
    await _varied_leads(state, orgs)
    posts = [(o, e, p) for o, e, p, _, _ in _posts(orgs)]
    async with state.engine.connect() as conn:
        alone = [
            (
                await conn.execute(
                    text("SELECT loudou_lock_open_lead(:o, :e, :p, CAST(:k AS text[]))"),
                    {"o": o, "e": e, "p": p, "k": direct.lock_keys(o, e, p)},
                )
            ).scalar_one()
            for o, e, p in posts
        ]
        await conn.rollback()
        keys = sorted({k for o, e, p in posts for k in direct.lock_keys(o, e, p)})
        together = (
            await conn.execute(
                text(
                    "SELECT loudou_lock_open_leads(CAST(:o AS uuid[]), CAST(:e AS text[]),"
                    " CAST(:p AS text[]), CAST(:k AS text[]))"
                ),
                {
                    "o": [o for o, _, _ in posts],
                    "e": [e for _, e, _ in posts],
                    "p": [p for _, _, p in posts],
                    "k": keys,
                },
            )
        ).scalar_one()
        # Every key's advisory lock is held until the transaction ends.
        held = (
            await conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            )
        ).scalar_one()
        await conn.rollback()
    assert list(together) == alone
    assert sum(1 for found in alone if found is not None) >= 20
    assert held == len(keys)
