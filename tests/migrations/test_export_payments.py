"""Migration export0001: payments and payment allocations get change stamps and tombstones, and back."""

from __future__ import annotations

import uuid

import asyncpg
from sqlalchemy.engine import make_url

from app.migrate import downgrade, revision_before, upgrade
from tests.conftest import Servers, _asyncpg_url

BEFORE = revision_before("export0001")
STAMPS = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_name IN ('payments', 'payment_allocations') AND column_name LIKE 'change_%' "
    "ORDER BY 1, 2"
)


async def test_existing_payments_are_stamped_updates_restamp_deletes_leave_tombstones_and_back(
    servers: Servers,
) -> None:
    name = f"loudou_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_asyncpg_url(servers.database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url, BEFORE)
        conn = await asyncpg.connect(_asyncpg_url(url))
        try:
            org_id, account_id, payment_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "INSERT INTO organisations (id, name, settings, created_at, updated_at, version)"
                " VALUES ($1, 'M', '{}', now(), now(), 1)",
                org_id,
            )
            await conn.execute(
                "INSERT INTO accounts (id, org_id, name, attributes, created_at, updated_at, version)"
                " VALUES ($1, $2, 'A', '{}', now(), now(), 1)",
                account_id,
                org_id,
            )
            await conn.execute(
                "INSERT INTO payments (id, org_id, account_id, amount, currency, received_at, method, status,"
                " created_at, updated_at, version)"
                " VALUES ($1, $2, $3, 10, 'CNY', '2026-11-01', 'cash', 'confirmed', now(), now(), 1)",
                payment_id,
                org_id,
                account_id,
            )
            assert await conn.fetch(STAMPS) == []
            await upgrade(url)
            before = await conn.fetchrow("SELECT change_xid, change_seq, updated_at FROM payments")
            assert before is not None
            assert before["change_xid"] > 0 and before["change_seq"] > 0  # existing rows stamped
            await conn.execute("UPDATE payments SET status = 'reversed' WHERE id = $1", payment_id)
            after = await conn.fetchrow("SELECT change_xid, change_seq, updated_at FROM payments")
            assert after is not None
            assert after["change_seq"] > before["change_seq"] and after["updated_at"] > before["updated_at"]
            await conn.execute("DELETE FROM payments WHERE id = $1", payment_id)
            tomb = await conn.fetchrow("SELECT entity, row_id, reason FROM deleted_rows")
            assert tomb is not None
            assert (tomb["entity"], tomb["row_id"], tomb["reason"]) == ("payments", payment_id, "deleted")
            await conn.close()
            await downgrade(url, BEFORE)
            conn = await asyncpg.connect(_asyncpg_url(url))
            assert await conn.fetch(STAMPS) == []
            triggers = await conn.fetchval(
                "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
                "('payments'::regclass, 'payment_allocations'::regclass)"
            )
            assert triggers == 0
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(_asyncpg_url(servers.database_url))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
