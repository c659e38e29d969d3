"""kombu's Redis transport with a gate in front of Celery: every message popped from our queues
is checked (``imagegen.envelope``) before Celery reads it.

A message that is not a well-formed task of ours goes to the quarantine with its reason, is
counted, and is logged without its body; the worker keeps consuming. A raw job (a generate
message carrying its job as a ``job`` keyword) becomes a waiting job here (``worker.intake``), and
the message ends: the job runs when the dispatcher releases it, like any other, and no prompt
reaches Celery's logs, its events or Flower.

Celery uses it through ``broker_transport = "worker.transport:GatedTransport"``; the connection
settings still come from the broker URL.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from imagegen.envelope import MalformedMessageError, check_envelope
from imagegen.messages import QUEUES

__all__ = ["GatedChannel", "GatedTransport", "admit"]

log = logging.getLogger("imagegen.gate")


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
        intake().accept(checked.task_id, checked.kwargs["job"])
        return None
    return checked.envelope


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
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            raw = bytes_to_str(item)
            # Our queues go through the gate; Celery's own (control replies) as kombu reads them.
            envelope = admit(raw, dest) if dest in QUEUES else loads(raw)
            if envelope is not None:
                self.connection._deliver(envelope, dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()


class GatedTransport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = GatedChannel
