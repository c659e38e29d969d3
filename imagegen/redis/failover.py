"""Following a Sentinel failover: what a connection does while the Sentinels promote a replica.

- Opening a connection (nothing sent yet) is tried again until the Sentinels name a primary that
  accepts it, for up to ``redis_connect_timeout_s``: a call made during a failover waits for the
  new primary instead of failing, when the failover is that quick.
- A command the old primary refused because it was demoted (READONLY) did nothing, so it is
  sent again on a new connection, to the primary the Sentinels name now.
- Any other error after a command was sent is the caller's to handle, as with a single server:
  the command may have run, and sending it again could run it twice.
- A pool asks the Sentinels which server is the primary every ``PRIMARY_CHECK_S``, from a thread
  of its own, not only when it opens a connection. A primary the Sentinels replaced can stay up
  and keep taking writes (until they turn it into a replica, seconds later, or for as long as it
  is cut off from them), and every write it took is lost when it resyncs from the new primary.
  Once the Sentinels name another server, the pool closes its idle connections to the old one
  and shuts down the busy ones (a command waiting on a primary cut off from the network would
  otherwise wait for its socket timeout, and a worker's blocking pop for ever): they fail now,
  as a dropped connection does, and the commands after that go to the new primary.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import weakref
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

__all__ = [
    "PRIMARY_CHECK_S",
    "BlockingSentinelConnectionPool",
    "DemotedPrimaryError",
    "FailoverConnection",
    "FailoverSSLConnection",
    "demoted_primary_retry",
    "follow_primary",
    "stop_following",
]

# A refused command is sent again this many times, about 3 s in all: until every Sentinel
# names the new primary (they learn it from each other within a few seconds).
DEMOTED_RETRIES = 8
# Waits between tries: opening a connection, and sending a command a demoted primary refused.
_FIRST_WAIT_S = 0.05
_LONGEST_WAIT_S = 0.5
# How often a pool asks the Sentinels which server is the primary (one SENTINEL MASTERS).
PRIMARY_CHECK_S = 1.0


class DemotedPrimaryError(RedisConnectionError):
    """The server this connection reached was demoted to a replica: the command did nothing."""


def demoted_primary_retry() -> Retry:
    """Send a command again only when a demoted primary refused it."""
    return Retry(
        ExponentialBackoff(cap=_LONGEST_WAIT_S, base=_FIRST_WAIT_S),
        DEMOTED_RETRIES,
        supported_errors=(DemotedPrimaryError,),
    )


class FailoverConnection(SentinelManagedConnection):
    def connect(self) -> None:
        deadline = time.monotonic() + (self._socket_connect_timeout or _LONGEST_WAIT_S)
        wait_s = _FIRST_WAIT_S
        while True:
            try:
                self._connect_retry()  # type: ignore[no-untyped-call]
            except RedisConnectionError:
                # The old primary is gone and no replica is promoted yet (or a Sentinel still
                # names the old one): ask them again shortly.
                if time.monotonic() + wait_s > deadline:
                    raise
                time.sleep(wait_s)
                wait_s = min(wait_s * 2, _LONGEST_WAIT_S)
                continue
            return

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        # Sentinel's own read turns READONLY into a plain ConnectionError; this one names it.
        try:
            return super(SentinelManagedConnection, self).read_response(*args, **kwargs)
        except ReadOnlyError as e:
            if not self.connection_pool.is_master:
                raise
            self.disconnect()  # type: ignore[no-untyped-call]
            # A command sent again reconnects this connection to its host and port (redis-py
            # does not ask the Sentinels then): point them at the primary named now.
            with contextlib.suppress(RedisConnectionError):
                self.host, self.port = self.connection_pool.get_master_address()
            raise DemotedPrimaryError(str(e)) from e


class FailoverSSLConnection(FailoverConnection, redis.SSLConnection):
    pass


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool with the bound of ``BlockingConnectionPool``: a caller that finds every
    connection busy waits for one instead of opening more. It follows the primary the Sentinels
    name from its first use on (``_PrimaryWatch``)."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        follow_primary(self)
        return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


_watch_lock = threading.Lock()


def follow_primary(pool: SentinelConnectionPool) -> None:
    """Have ``pool`` (any of redis-py's Sentinel pools, kombu's too) ask the Sentinels for the
    primary every ``PRIMARY_CHECK_S`` from now on, in this process (``_PrimaryWatch``)."""
    watch = getattr(pool, "_primary_watch", None)
    if watch is not None and watch.serves(pool):
        return
    with _watch_lock:
        watch = getattr(pool, "_primary_watch", None)
        if watch is None or not watch.serves(pool):
            pool._primary_watch = _PrimaryWatch(pool)  # type: ignore[attr-defined]


def stop_following(pool: SentinelConnectionPool) -> None:
    """End ``pool``'s checks (its owner closes it and the Sentinel clients it asks)."""
    with _watch_lock:
        if getattr(pool, "_primary_watch", None) is not None:
            pool._primary_watch = None  # type: ignore[attr-defined]


class _PrimaryWatch:
    """A thread that asks the Sentinels for the primary every ``PRIMARY_CHECK_S``, for as long
    as its pool exists, in the process that started it. When the answer changes, redis-py's
    ``get_master_address`` closes the pool's idle connections, and the busy ones to the old
    server are shut down (``_cut_connections_to``)."""

    def __init__(self, pool: SentinelConnectionPool) -> None:
        self._pool = weakref.ref(pool)
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="redis-primary-watch", daemon=True).start()

    def serves(self, pool: SentinelConnectionPool) -> bool:
        # A forked child has the pool but not the thread.
        return self._pid == os.getpid() and self._pool() is pool

    def _run(self) -> None:
        while True:
            time.sleep(PRIMARY_CHECK_S)
            pool = self._pool()
            if pool is None or getattr(pool, "_primary_watch", None) is not self:
                return
            before = pool.master_address
            with contextlib.suppress(Exception):
                # No answer (a failover under way, the Sentinels unreachable, the pool closed
                # meanwhile): the connections stay as they are, and the next check asks again.
                now = pool.get_master_address()  # type: ignore[no-untyped-call]
                if before is not None and now != before:
                    _cut_connections_to(pool, before)
            del pool


def _cut_connections_to(pool: SentinelConnectionPool, address: Any) -> None:
    """Shut down the sockets of ``pool``'s connections to ``address``, busy ones too: a reply
    they wait for fails at once, as on a dropped connection (the command may or may not have
    run, as then), and the connection is closed and opened again to the new primary by its user.
    Shut down, not closed: a socket another thread reads, or a worker's event loop polls, must
    see the end rather than vanish under it."""
    connections: set[Any] = set()
    for name in ("_in_use_connections", "_available_connections", "_connections"):
        for _ in range(3):  # another thread may change the collection as it is read
            try:
                connections.update(list(getattr(pool, name, None) or ()))
                break
            except RuntimeError:
                continue
    host, port = address
    for connection in connections:
        sock = getattr(connection, "_sock", None)
        if sock is None or (connection.host, connection.port) != (host, port):
            continue
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
