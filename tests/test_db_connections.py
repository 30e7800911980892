"""Connections: no SSL attempt on a local server unless the URL asks for it; a server's pool is
full before its first request."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db import wants_ssl
from app.main import create_app
from app.state import AppState
from tests.conftest import Servers, fresh_database


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/db", False),
        ("postgresql+asyncpg://postgres@localhost/db", False),
        ("postgresql+asyncpg://postgres@[::1]:5432/db", False),
        ("postgresql+asyncpg://postgres@/db?host=/run/postgresql", False),
        ("postgresql+asyncpg://postgres@127.0.0.1/db?ssl=require", True),
        ("postgresql+asyncpg://postgres@localhost/db?sslmode=verify-full", True),
        ("postgresql+asyncpg://loudou@db.example.com:5432/loudou", True),
    ],
)
def test_ssl_only_off_the_machine_or_when_asked(url: str, expected: bool) -> None:
    assert wants_ssl(url) is expected


async def test_a_server_opens_its_whole_pool_before_its_first_request(
    settings: Settings, servers: Servers
) -> None:
    """Under load a lazily grown pool opened its last connections mid-traffic (a new backend in
    a steady run); a server of its own now starts with all `db_pool_size` of them."""
    async with fresh_database(servers) as url:
        own = settings.model_copy(update={"database_url": url, "db_pool_size": 5})
        watcher = AppState.open(settings)  # another database: not counted below
        app = create_app(own)
        try:
            async with app.router.lifespan_context(app):
                pool = app.state.loudou.engine.sync_engine.pool
                assert pool.checkedin() == 5
                async with watcher.sessions() as session:
                    backends = (
                        await session.execute(
                            text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db"),
                            {"db": app.state.loudou.engine.url.database},
                        )
                    ).scalar_one()
                assert backends == 5
        finally:
            await watcher.close()
