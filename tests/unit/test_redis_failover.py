"""A pool that follows the primary: a command waiting on a primary the Sentinels replaced fails
at once, instead of waiting for a server cut off from the network."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from imagegen.redis.failover import (
    PRIMARY_CHECK_S,
    BlockingSentinelConnectionPool,
    FailoverConnection,
    stop_following,
)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A server that accepts connections and never answers: a primary behind a partition."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[:2]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


class Sentinels:
    """What the pool asks the Sentinels, answered by the test."""

    def __init__(self, primary: tuple[str, int]) -> None:
        self.primary = primary

    def discover_master(self, service_name: str) -> tuple[str, int]:
        return self.primary


def test_a_command_waiting_on_a_replaced_primary_fails_once_the_sentinels_name_another(
    silent_server: tuple[str, int],
) -> None:
    sentinels = Sentinels(silent_server)
    pool: Any = BlockingSentinelConnectionPool(
        "mymaster",
        sentinels,
        connection_class=FailoverConnection,
        socket_timeout=60,
        socket_connect_timeout=2,
    )
    outcome: list[BaseException | None] = []

    def wait_for_a_reply() -> None:
        try:
            connection = pool.get_connection()
            connection.send_command("PING")
            connection.read_response()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait_for_a_reply, daemon=True)
    started = time.monotonic()
    waiter.start()
    try:
        time.sleep(PRIMARY_CHECK_S * 1.5)  # the waiter is blocked on the silent primary
        assert outcome == []
        sentinels.primary = ("127.0.0.1", 1)  # a failover: another server is the primary
        waiter.join(timeout=PRIMARY_CHECK_S * 5)
    finally:
        stop_following(pool)
    assert len(outcome) == 1, "the command still waits on the replaced primary"
    assert isinstance(outcome[0], RedisConnectionError), outcome
    assert time.monotonic() - started < 10  # far from its 60 s socket timeout
