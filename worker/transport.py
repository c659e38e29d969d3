"""kombu's Redis transport with a gate in front of Celery: every message popped from our queues
is checked (``imagegen.envelope``) before Celery reads it.

A message that is not a well-formed task of ours goes to the quarantine with its reason, is
counted, and is logged without its body; the worker keeps consuming. A raw job (a generate
message carrying its job as a ``job`` keyword) becomes a waiting job here (``worker.intake``), and
the message ends: the job runs when the dispatcher releases it, like any other, and no prompt
reaches Celery's logs, its events or Flower. Any other task reaches Celery as an envelope rebuilt
from its checked fields, never with the original's other headers.

A popped message exists only in this process until Celery holds it (or it became a job, or went
to the quarantine). When that fails (Redis went away while the job was being stored, say), the
message goes back onto the end of its list that is popped next, retried until Redis answers: it
is never dropped while the process lives. A message handed over twice that way runs once: every
task is idempotent by its id.

Celery uses it through ``broker_transport = "worker.transport:GatedTransport"``; the connection
settings still come from the broker URL.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ConnectionError as RedisConnectionError

from imagegen.envelope import MalformedMessageError, check_envelope
from imagegen.messages import QUEUES
from imagegen.redis.failover import follow_primary, stop_following

__all__ = [
    "GatedChannel",
    "GatedSentinelChannel",
    "GatedSentinelTransport",
    "GatedTransport",
    "admit",
]

log = logging.getLogger("imagegen.gate")

# Putting a message back: the first wait, doubled each failure up to the longest.
_PUT_BACK_FIRST_WAIT_S = 0.05
_PUT_BACK_LONGEST_WAIT_S = 2.0
# After a message was put back, so a failure that repeats does not spin on the same message.
_PAUSE_AFTER_PUT_BACK_S = 0.5


def admit(raw: str, queue: str) -> dict[str, Any] | None:
    """The envelope to deliver to Celery, or None when the message was set aside or taken in
    as a waiting job."""
    from worker.runtime import intake, quarantine  # noqa: PLC0415  (built on first use)

    try:
        checked = check_envelope(raw, queue)
    except MalformedMessageError as e:
        quarantine().add(queue, e.reason, e.detail, raw)
        log.warning(
            "message quarantined",
            extra={"queue": queue, "reason": e.reason, "detail": e.detail, "bytes": len(raw)},
        )
        return None
    if "job" in checked.kwargs:
        intake().accept_raw_job(checked.task_id, checked.kwargs["job"], raw, queue)
        return None
    return checked.message(queue)


class GatedChannel(kombu_redis.Channel):  # type: ignore[misc]
    # The connection parameters as they were while the connection was open, by ``asynchronous``.
    _known_connparams: dict[bool, dict[str, Any]] | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """kombu 5.7 builds a new pool from ``self.connection.client``, which a closed
        connection has set to None: restoring unacknowledged messages after Redis went away then
        raised ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and the worker
        exited ("Unrecoverable error"). Here it uses the parameters it had while the connection
        was open, so the restore fails (if Redis is still down) with a connection error, which
        kombu and Celery retry."""
        if self.connection.client is None and self._known_connparams:
            known = self._known_connparams.get(asynchronous) or next(
                iter(self._known_connparams.values())
            )
            return dict(known)
        params: dict[str, Any] = super()._connparams(asynchronous)
        self._known_connparams = {**(self._known_connparams or {}), asynchronous: dict(params)}
        return params

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's own read, with the gate between the pop and the delivery.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            popped_from, item = dest__item
            popped_from = bytes_to_str(popped_from)
            dest = popped_from.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            raw = bytes_to_str(item)
            if dest not in QUEUES:  # Celery's own (control replies), as kombu reads them
                self.connection._deliver(loads(raw), dest)
                return True
            try:
                envelope = admit(raw, dest)
                if envelope is not None:
                    self.connection._deliver(envelope, dest)
            except BaseException as e:
                self._put_back(popped_from, item, e)
                if not isinstance(e, Exception):
                    raise  # the process is stopping
                time.sleep(_PAUSE_AFTER_PUT_BACK_S)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _put_back(self, key: str, item: bytes | str, error: BaseException) -> None:
        """Push a popped message back where BRPOP takes next (the right end of the list ``key``
        it came from), retrying until Redis answers; only once when the process is stopping."""
        stopping = not isinstance(error, Exception)
        log.warning(
            "a popped message could not be handed on; putting it back on its queue",
            extra={"queue": key, "error": type(error).__name__, "bytes": len(item)},
        )
        wait_s, attempts = _PUT_BACK_FIRST_WAIT_S, 0
        while True:
            attempts += 1
            try:
                with self.conn_or_acquire() as client:
                    client.rpush(key, item)
            except Exception as e:
                if stopping:
                    log.exception("a popped message could not be put back", extra={"queue": key})
                    return
                log.warning(
                    "cannot put a popped message back yet; trying again",
                    extra={"queue": key, "attempts": attempts, "error": type(e).__name__},
                )
                time.sleep(wait_s)
                wait_s = min(wait_s * 2, _PUT_BACK_LONGEST_WAIT_S)
                continue
            log.info("message put back on its queue", extra={"queue": key, "attempts": attempts})
            return


class GatedTransport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = GatedChannel


class GatedSentinelChannel(GatedChannel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """The gate on kombu's Sentinel channel: the primary is the one the Sentinels name.

    Its pools ask the Sentinels for the primary every second (``follow_primary``), and a BRPOP
    is not sent on a connection to a server they no longer name: the connection is closed and
    the consumer reconnects to the new primary. Without that, a replaced primary that stays up
    (until the Sentinels turn it into a replica, or for as long as it is cut off from them) keeps
    the worker consuming from a list nobody pushes to any more."""

    # The connection as it was while open (see ``_pool_from_sentinels``).
    _known_connection: _KnownConnection | None = None

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        pool = self._pool_from_sentinels(asynchronous)
        follow_primary(pool)
        return pool

    def _pool_from_sentinels(self, asynchronous: bool) -> Any:
        """kombu reads the Sentinels and the connection's parameters from
        ``self.connection.client``, which a closed connection has set to None (a reconnect
        closes the channel, and putting its unacknowledged messages back opens a pool); here
        from what it was while the connection was open."""
        client = self.connection.client
        if client is not None:
            self._known_connection = _KnownConnection.of(client)
            return super()._sentinel_managed_pool(asynchronous)
        if self._known_connection is None:
            return super()._sentinel_managed_pool(asynchronous)
        stand_in = self._known_connection
        self.connection.client = stand_in
        try:
            return super()._sentinel_managed_pool(asynchronous)
        finally:
            if self.connection.client is stand_in:
                self.connection.client = None

    def _disconnect_pools(self) -> None:
        # kombu closes the Sentinel clients here too: nothing may ask them afterwards.
        for pool in (self._pool, self._async_pool):
            if pool is not None:
                stop_following(pool)
        super()._disconnect_pools()

    def _brpop_start(self, timeout: int | None = None) -> None:
        connection = self.client.connection
        primary = self.client.connection_pool.master_address
        if (
            primary is not None
            and connection is not None
            and connection._sock is not None
            and (connection.host, connection.port) != tuple(primary)
        ):
            connection.disconnect()
            msg = f"the Sentinels name {primary[0]}:{primary[1]} the primary now"
            raise RedisConnectionError(msg)
        super()._brpop_start(timeout)


@dataclass(frozen=True)
class _KnownConnection:
    """What kombu's Sentinel pool reads of a connection (``_connparams`` and
    ``_sentinel_managed_pool``): its address, credentials, TLS and Sentinel URLs."""

    hostname: str | None
    port: int | None
    virtual_host: str | None
    userid: str | None
    password: str | None
    credential_provider: Any
    ssl: Any
    alt: list[str]

    @classmethod
    def of(cls, client: Any) -> _KnownConnection:
        return cls(
            hostname=client.hostname,
            port=client.port,
            virtual_host=client.virtual_host,
            userid=client.userid,
            password=client.password,
            credential_provider=getattr(client, "credential_provider", None),
            ssl=client.ssl,
            alt=list(client.alt),
        )


class GatedSentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = GatedSentinelChannel
