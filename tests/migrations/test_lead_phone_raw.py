"""Migration b1c4phoneraw1: stored phones that are not valid numbers move to phone_raw, and back."""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy.engine import make_url

from app.migrate import downgrade, revision_before, upgrade
from tests.conftest import Servers, _asyncpg_url

BEFORE = revision_before("b1c4phoneraw1")
LEADS = {
    "+13800138000": None,  # a Chinese mobile once read as a US number: valid nowhere
    "+14155550100": "+14155550100",
    "+8613800138000": "+8613800138000",
}


async def test_invalid_stored_phones_move_to_phone_raw_and_back(servers: Servers) -> None:
    name = f"loudou_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_asyncpg_url(servers.database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url, BEFORE)
        conn = await asyncpg.connect(_asyncpg_url(url))
        try:
            org_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO organisations (id, name, settings, created_at, updated_at, version)"
                " VALUES ($1, 'M', '{}', now(), now(), 1)",
                org_id,
            )
            for phone in LEADS:
                await conn.execute(
                    "INSERT INTO leads (id, org_id, status, source, source_detail, attributes, tags, score,"
                    " score_breakdown, pooled, touch_count, phone, created_at, updated_at, version)"
                    " VALUES ($1, $2, 'new', 'api', '{}', '{}', '[]', 0, '[]', true, 1, $3, now(), now(), 1)",
                    uuid.uuid4(),
                    org_id,
                    phone,
                )
            await upgrade(url)
            rows = await conn.fetch("SELECT phone, phone_raw FROM leads ORDER BY phone_raw NULLS LAST, phone")
            got = {(r["phone"], r["phone_raw"]) for r in rows}
            assert got == {(None, "+13800138000"), ("+14155550100", None), ("+8613800138000", None)}

            await conn.execute(
                "UPDATE leads SET phone_raw = 'call 138 0013 8000 after 6' WHERE phone = '+14155550100'"
            )
            await conn.close()
            await downgrade(url, BEFORE)
            conn = await asyncpg.connect(_asyncpg_url(url))
            rows = await conn.fetch("SELECT phone, attributes->>'phone_raw' AS raw FROM leads")
            assert {(r["phone"], r["raw"]) for r in rows} == {
                ("+13800138000", None),
                ("+14155550100", "call 138 0013 8000 after 6"),
                ("+8613800138000", None),
            }
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(_asyncpg_url(servers.database_url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
