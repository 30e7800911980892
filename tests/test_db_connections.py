"""Connections: no SSL attempt on a local server unless the URL asks for it."""

from __future__ import annotations

import pytest

from app.db import wants_ssl


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
