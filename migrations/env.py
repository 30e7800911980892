"""Alembic environment: async engine, the app's metadata, connection passed in when given."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers every table on the metadata)
from app.config import get_settings

config = context.config
target_metadata = SQLModel.metadata


def _do_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL without a database."""
    context.configure(
        url=get_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run)
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    """Use the connection handed over by app.migrate, else DATABASE_URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _do_run(connection)
        return
    url = config.attributes.get("url") or get_settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set; use `loudou migrate` for the embedded server")
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
