"""Embedded Redis start-up waits through the moment its socket exists but does not listen yet."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.embedded import wait_until_listening


def test_refused_pings_are_retried_until_the_server_listens() -> None:
    calls: list[int] = []

    def ping() -> bool:
        calls.append(1)
        if len(calls) < 3:  # the socket file is there, listen() not yet called
            raise RedisConnectionError("Error 111 connecting to redis.sock. Connection refused.")
        return True

    wait_until_listening(ping, timeout=5)
    assert len(calls) == 3


def test_a_server_that_never_listens_still_fails_after_the_timeout() -> None:
    def ping() -> bool:
        raise RedisConnectionError("Connection refused.")

    with pytest.raises(RedisConnectionError):
        wait_until_listening(ping, timeout=0.2)
