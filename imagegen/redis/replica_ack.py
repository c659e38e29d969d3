"""Waiting for a replica before answering for a write (``IMAGEGEN_REDIS_REPLICA_ACK``).

Replication is asynchronous: a primary that fails right after a write may take the write with
it, and a replica promoted in its place never had it. The writes the service answers for (a
job accepted, a cancel, a final status, a delivery queued, a Bedrock call's mark just before
money is spent, a retry that books a bought image) can therefore wait, on the connection that
made them, until a replica has them (``WAIT 1 timeout``) before the answer goes out. Since
replication keeps order, that also covers every write before them (a call's mark covers its
job's claim and reservation). When no replica confirms within
``IMAGEGEN_REDIS_REPLICA_ACK_TIMEOUT_S``, the write is refused as retryable
(``ReplicaAckTimeoutError``; the API answers 503), or its caller goes on as it says.

``on`` always waits; ``off`` never does; ``auto`` (the default) waits while the primary reports
a connected replica (read again every ``REPLICAS_CHECK_S``), so a single server pays nothing.

The policy belongs to a client: ``imagegen.redis.connection.connect`` registers the settings'
one on each client it makes; a client made any other way (fakeredis in tests) waits for none.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import redis
from redis.client import Pipeline

from imagegen.settings import Settings

__all__ = ["REPLICAS_CHECK_S", "AckedPipeline", "ReplicaAck"]

# How often ``auto`` asks the primary whether a replica is connected.
REPLICAS_CHECK_S = 5.0
# How many replicas a write waits for.
REPLICAS_NEEDED = 1


@dataclass
class ReplicaAck:
    mode: str = "off"  # "on", "off" or "auto"
    timeout_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _checked_at: float | None = field(default=None, repr=False)
    _replicas: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _by_client: ClassVar[weakref.WeakKeyDictionary[Any, ReplicaAck]] = weakref.WeakKeyDictionary()

    @classmethod
    def from_settings(cls, settings: Settings, socket_timeout_s: float) -> ReplicaAck:
        # The wait is read on the connection that wrote: it must end well inside its timeout.
        timeout_s = min(settings.redis_replica_ack_timeout_s, socket_timeout_s / 2)
        return cls(settings.redis_replica_ack, timeout_s)

    @classmethod
    def register(cls, client: Any, policy: ReplicaAck) -> None:
        cls._by_client[client] = policy

    @classmethod
    def of(cls, client: Any) -> ReplicaAck:
        return cls._by_client.get(client) or _NEVER

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout_s * 1000))

    def replicas_needed(self, client: Any) -> int:
        """How many replicas a write on ``client`` waits for now: 0 or ``REPLICAS_NEEDED``."""
        if self.mode == "on":
            return REPLICAS_NEEDED
        if self.mode != "auto":
            return 0
        now = self.clock()
        with self._lock:
            fresh = self._checked_at is not None and now - self._checked_at < REPLICAS_CHECK_S
        if not fresh:
            replicas = int(client.info("replication").get("connected_slaves", 0))
            with self._lock:
                self._replicas, self._checked_at = replicas, now
        return REPLICAS_NEEDED if self._replicas > 0 else 0


_NEVER = ReplicaAck("off")


class AckedPipeline(Pipeline):
    """A pipeline that, on the connection its commands ran on, then waits for ``replicas``
    replicas to have them; ``acked`` is how many did within ``timeout_ms``."""

    def __init__(
        self, client: redis.Redis, *, transaction: bool, replicas: int, timeout_ms: int
    ) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, None)
        self.replicas, self.timeout_ms = replicas, timeout_ms
        self.acked: int | None = None

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        replies = super()._execute_transaction(connection, commands, raise_on_error)
        self.acked = self._wait(connection)
        return replies

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        replies = super()._execute_pipeline(  # type: ignore[no-untyped-call]
            connection, commands, raise_on_error
        )
        self.acked = self._wait(connection)
        return replies

    def _wait(self, connection: Any) -> int:
        connection.send_command("WAIT", self.replicas, self.timeout_ms)
        return int(connection.read_response())
