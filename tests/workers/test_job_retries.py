"""Jobs turn transient failures into arq's Retry with backoff; real bugs still fail."""

from __future__ import annotations

from typing import Any

import pytest
from arq import Retry
from sqlalchemy.exc import OperationalError

from app.observability import backoff, instrumented


async def test_transient_errors_become_retry_with_backoff() -> None:
    calls = 0

    @instrumented
    async def flaky(ctx: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database restarting"))

    with pytest.raises(Retry) as caught:
        await flaky({"job_try": 3})
    assert caught.value.defer_score == 4000  # milliseconds
    assert calls == 1 and flaky.__name__ == "flaky"


async def test_bugs_are_not_retried() -> None:
    @instrumented
    async def broken(ctx: dict[str, Any]) -> str:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        await broken({"job_try": 1})


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 8, 60]
