"""Jobs from backends that speak only Redis, turned into waiting jobs like any other.

Two ways in (docs/submitting/redis.md shows both):

- the plain intake: a JSON job LPUSHed onto the list ``imagegen:intake``: the body of
  ``POST /v1/jobs`` plus ``job_id`` (required: it makes reading a job twice harmless),
  ``tenant`` and ``traceparent`` (optional: the caller's W3C trace context, which the job's
  trace continues). Every worker process reads it, oldest first, several at once
  (``imagegen.intake_queue``): a message is removed only once it has been handled, and the
  messages of a reader that died or stalled are read again by another.
- the older raw Celery message (a generate message carrying its job as a ``job`` keyword),
  checked by the gate (``worker.transport``).

Either way the job goes through the same submission as ``POST /v1/jobs``
(``imagegen.submission``): validation, the tenant's default webhook, webhook vetting, input
images bound to what the tenant may read, its deadline, the caps on open jobs. A valid job joins
its waiting set (and the fair share) like any other; a refused one gets a ``failed`` record
saying why; a message that is not a job at all goes to the quarantine, and so does one whose
handling raised anything but a lost connection to Redis, so no message can stop the intake.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import redis as redis_lib

from imagegen import tracing
from imagegen.envelope import MAX_MESSAGE_BYTES
from imagegen.errors import InvalidRequestError, JobConflictError, QueueFullError
from imagegen.ids import is_valid_job_id, scoped_job_id
from imagegen.intake_queue import INTAKE_LEASE_S, IntakeQueue
from imagegen.s3 import make_s3_client
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore
from imagegen.store.quarantine import Quarantine
from imagegen.store.tenants import TENANT_PATTERN, is_tenant_name
from imagegen.submission import Submitter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["INTAKE_READ_MOST", "Intake"]

log = logging.getLogger("imagegen.intake")

INVALID_REQUEST = "InvalidRequest"
QUEUE_FULL = "QueueFull"
# Most intake messages one pass reads.
INTAKE_READ_MOST = 500
_INTAKE_QUEUE = "intake"
# Redis that cannot be reached is no fault of the message: it stays where it is (in the
# reader's list, or back on its queue) and is read again, never set aside.
_UNREACHABLE = (redis_lib.ConnectionError, redis_lib.TimeoutError)


class Intake:
    def __init__(
        self,
        store: JobStore,
        dispatch: Dispatch,
        settings: Settings,
        *,
        s3: Callable[[], S3Client] | None = None,
        lease_s: float = INTAKE_LEASE_S,
    ) -> None:
        self._store = store
        self._settings = settings
        self._submitter = Submitter.build(settings, store, dispatch, s3 or _s3_of(settings))
        self._quarantine = Quarantine(store.redis)
        self._queue = IntakeQueue(store.redis, lease_s)

    def accept(self, job_id: str, payload: Any, tenant: str | None = None) -> bool:
        """Submit the job ``job_id`` (the caller's id, stored in the tenant's namespace) from
        ``payload`` (the body of ``POST /v1/jobs``, and the caller's trace as a ``traceparent``
        field, ignored when malformed), or record it ``failed`` when it is refused; False when
        the id already had a record."""
        stored_id = scoped_job_id(tenant, job_id) if tenant else job_id
        if self._store.exists(stored_id):
            return False
        traceparent = None
        if isinstance(payload, dict) and "traceparent" in payload:
            payload = dict(payload)
            traceparent = payload.pop("traceparent")
        with tracing.continued(traceparent if isinstance(traceparent, str) else None):
            return self._submit(stored_id, job_id, payload, tenant)

    def _submit(self, stored_id: str, job_id: str, payload: Any, tenant: str | None) -> bool:
        try:
            if not isinstance(payload, dict):
                raise InvalidRequestError([])  # reported below as a whole
            spec = self._submitter.parse({**payload, "job_id": job_id})
            [submitted] = self._submitter.create_jobs([spec], tenant=tenant)
        except InvalidRequestError as e:
            problems = (
                "; ".join(str(error) for error in e.errors) or "the job must be a JSON object"
            )
            return self._refuse(stored_id, payload, INVALID_REQUEST, problems)
        except QueueFullError as e:
            return self._refuse(stored_id, payload, QUEUE_FULL, f"{e.setting}: {e}")
        except JobConflictError:
            return False  # another message with this id was taken in meanwhile
        if submitted.created:
            log.info("job accepted from Redis", extra={"job_id": stored_id, "tenant": tenant})
        return submitted.created

    def accept_raw_job(self, job_id: str, payload: Any, raw: str, queue: str) -> None:
        """Take in the job of a raw Celery message from ``queue``; set the message aside when
        taking it in fails for any reason but an unreachable Redis."""
        with self._set_aside_on_error(raw, queue):
            self.accept(job_id, payload)

    def read_list(self) -> int:
        """Turn the oldest messages of the plain intake into jobs; returns how many were
        handled. A message leaves Redis only once handled: a process that dies midway leaves
        the rest to the next reader."""
        taken = self._queue.take(INTAKE_READ_MOST)
        if taken is None:
            return 0
        for handled, raw in enumerate(taken.messages):
            if not self._queue.keep(taken):
                log.warning(
                    "intake pass outlived its lease; the messages it had not read went back",
                    extra={"handled": handled, "taken": len(taken.messages)},
                )
                return handled
            with self._set_aside_on_error(raw, _INTAKE_QUEUE):
                self._read_message(raw)
        self._queue.finish(taken)
        return len(taken.messages)

    def _read_message(self, raw: bytes) -> None:
        if len(raw) > MAX_MESSAGE_BYTES:
            detail = f"{len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}"
            self._set_aside(_INTAKE_QUEUE, "too-large", detail, raw)
            return
        try:
            message = json.loads(raw.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError is one
            self._set_aside(_INTAKE_QUEUE, "not-json", f"not JSON: {type(e).__name__}", raw)
            return
        if not isinstance(message, dict):
            self._set_aside(_INTAKE_QUEUE, "not-a-job", "the message must be a JSON object", raw)
            return
        job_id, tenant = message.pop("job_id", None), message.pop("tenant", None)
        if not isinstance(job_id, str) or not is_valid_job_id(job_id):
            detail = "job_id: a string of letters, digits, _ and -"
            self._set_aside(_INTAKE_QUEUE, "no-job-id", detail, raw)
            return
        # Checked before the id is scoped by it: no record is ever kept under a bad tenant.
        if tenant is not None and not (isinstance(tenant, str) and is_tenant_name(tenant)):
            detail = f"tenant: must match {TENANT_PATTERN}"
            self._set_aside(_INTAKE_QUEUE, "bad-tenant", detail, raw)
            return
        self.accept(job_id, message, tenant)

    @contextmanager
    def _set_aside_on_error(self, raw: str | bytes, queue: str) -> Iterator[None]:
        try:
            yield
        except _UNREACHABLE:
            raise
        except Exception as e:
            # Named by type only: an exception's text may quote the message (a prompt).
            detail = f"{type(e).__name__} while handling it"
            self._set_aside(queue, "unreadable", detail, raw)

    def _set_aside(self, queue: str, reason: str, detail: str, raw: str | bytes) -> None:
        self._quarantine.add(queue, reason, detail, raw)
        log.warning(
            "intake message quarantined",
            extra={"queue": queue, "reason": reason, "detail": detail, "bytes": len(raw)},
        )

    def _refuse(self, stored_id: str, payload: Any, error_code: str, problems: str) -> bool:
        settings = self._settings
        model_id = settings.model_id
        request = None
        if isinstance(payload, dict):
            model_id = str(payload.get("model_id") or settings.model_id)
            request = payload.get("request")
        refused = self._store.refuse(
            stored_id, model_id=model_id, request=request, error_code=error_code, problems=problems
        )
        if refused:
            log.warning(
                "job refused on arrival",
                extra={"job_id": stored_id, "error_code": error_code, "problems": problems},
            )
        return refused


def _s3_of(settings: Settings) -> Callable[[], S3Client]:
    """An S3 client made on first use: most intake jobs name no input image."""
    return cache(lambda: make_s3_client(settings))
