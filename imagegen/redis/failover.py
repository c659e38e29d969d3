"""Following a Sentinel failover: what a connection does while the Sentinels promote a replica.

- Opening a connection (nothing sent yet) is tried again until the Sentinels name a primary that
  accepts it, for up to ``redis_connect_timeout_s``: a call made during a failover waits for the
  new primary instead of failing, when the failover is that quick.
- A command the old primary refused because it was demoted (READONLY) did nothing, so it is
  sent again on a new connection, to the primary the Sentinels name now.
- Any other error after a command was sent is the caller's to handle, as with a single server:
  the command may have run, and sending it again could run it twice.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.retry import Retry
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

__all__ = [
    "BlockingSentinelConnectionPool",
    "DemotedPrimaryError",
    "FailoverConnection",
    "FailoverSSLConnection",
    "demoted_primary_retry",
]

# A refused command is sent again this many times, about 3 s in all: until every Sentinel
# names the new primary (they learn it from each other within a few seconds).
DEMOTED_RETRIES = 8
# Waits between tries: opening a connection, and sending a command a demoted primary refused.
_FIRST_WAIT_S = 0.05
_LONGEST_WAIT_S = 0.5


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
    connection busy waits for one instead of opening more."""
