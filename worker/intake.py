"""Jobs from backends that speak only Redis, turned into waiting jobs like any other.

Two ways in (the README shows both):

- the plain intake: a JSON job LPUSHed onto the list ``imagegen:intake``: the body of
  ``POST /v1/jobs`` plus ``job_id`` (required: it makes reading a job twice harmless) and
  ``tenant`` (optional). Worker processes read it oldest first, one at a time by a lock.
- the older raw Celery message (a generate message carrying its job as a ``job`` keyword),
  checked by the gate (``worker.transport``).

Either way the job is validated exactly as a submitted one: a valid job joins its waiting set
(and the fair share) like any other; a refused one gets a ``failed`` record saying which fields
are wrong; a message without a usable job id goes to the quarantine.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from imagegen.contract import JobSpec
from imagegen.errors import InvalidRequestError
from imagegen.ids import is_valid_job_id, scoped_job_id
from imagegen.records import NewJob
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.ssrf import WebhookUrlError, vet_configured
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore
from imagegen.store.quarantine import Quarantine
from imagegen.store.tenants import TENANT_PATTERN, is_tenant_name

__all__ = ["INTAKE_READ_MOST", "Intake"]

log = logging.getLogger("imagegen.intake")

INVALID_REQUEST = "InvalidRequest"
# Most intake messages one pass reads.
INTAKE_READ_MOST = 500
_LOCK_S = 30
_INTAKE_QUEUE = "intake"


class Intake:
    def __init__(self, store: JobStore, dispatch: Dispatch, settings: Settings) -> None:
        self._store = store
        self._dispatch = dispatch
        self._settings = settings
        self._quarantine = Quarantine(store.redis)
        self._token = uuid.uuid4().hex

    def accept(self, job_id: str, payload: Any, tenant: str | None = None) -> bool:
        """Create the waiting job ``job_id`` from ``payload`` (the submit body), or its
        ``failed`` record when it breaks the rules; False when the id already had a record."""
        if self._store.exists(job_id):
            return False
        if tenant is not None and not is_tenant_name(tenant):
            problems = f"tenant: must match {TENANT_PATTERN}"
            return _refuse(self._store, self._settings, job_id, payload, problems)
        try:
            if not isinstance(payload, dict):
                raise InvalidRequestError([])  # reported below as a whole
            fields = {name: value for name, value in payload.items() if name != "job_id"}
            spec = JobSpec.parse(fields, **self._settings.contract_context())
            if spec.webhook_url:
                vet_configured(spec.webhook_url, self._settings)
        except InvalidRequestError as e:
            problems = (
                "; ".join(str(error) for error in e.errors) or "the job must be a JSON object"
            )
            return _refuse(self._store, self._settings, job_id, payload, problems)
        except WebhookUrlError as e:
            return _refuse(self._store, self._settings, job_id, payload, f"webhook_url: {e}")
        job = NewJob(
            job_id=job_id,
            model_id=spec.model_id or self._settings.model_id,
            spec=spec,
            created_ms=int(time.time() * 1000),
            tenant=tenant,
        )
        self._store.create([job], dispatch=self._dispatch)
        log.info("job accepted from Redis", extra={"job_id": job_id, "tenant": tenant})
        return True

    def read_list(self) -> int:
        """Turn the oldest messages of the plain intake into jobs, if this process holds the
        intake's lock; returns how many messages were read. A message is removed only after its
        job exists, so a process that dies midway leaves it for the next reader."""
        redis = self._store.redis
        if not redis.llen(keys.INTAKE_KEY):
            return 0
        taken = redis.set(keys.INTAKE_LOCK_KEY, self._token, nx=True, ex=_LOCK_S)
        if not taken and redis.get(keys.INTAKE_LOCK_KEY) != self._token:
            return 0
        try:
            raw = [str(item) for item in redis.lrange(keys.INTAKE_KEY, -INTAKE_READ_MOST, -1)]
            # Oldest last (LPUSH puts the newest first): take them in arrival order.
            for item in reversed(raw):
                self._accept_message(item)
            if raw:
                redis.ltrim(keys.INTAKE_KEY, 0, -len(raw) - 1)
            return len(raw)
        finally:
            if redis.get(keys.INTAKE_LOCK_KEY) == self._token:
                redis.delete(keys.INTAKE_LOCK_KEY)

    def _accept_message(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError as e:
            self._set_aside("not-json", f"not JSON: {e}", raw)
            return
        if not isinstance(message, dict):
            self._set_aside("not-a-job", "the message must be a JSON object", raw)
            return
        job_id, tenant = message.pop("job_id", None), message.pop("tenant", None)
        if not isinstance(job_id, str) or not is_valid_job_id(job_id):
            self._set_aside("no-job-id", "job_id: a string of letters, digits, _ and -", raw)
            return
        if tenant is not None and not isinstance(tenant, str):
            self._set_aside("bad-tenant", "tenant: a string", raw)
            return
        stored_id = scoped_job_id(tenant, job_id) if tenant else job_id
        self.accept(stored_id, message, tenant)

    def _set_aside(self, reason: str, detail: str, raw: str) -> None:
        self._quarantine.add(_INTAKE_QUEUE, reason, detail, raw)
        log.warning("intake message quarantined", extra={"reason": reason, "detail": detail})


def _refuse(store: JobStore, settings: Settings, job_id: str, payload: Any, problems: str) -> bool:
    model_id = settings.model_id
    request = None
    if isinstance(payload, dict):
        model_id = str(payload.get("model_id") or settings.model_id)
        request = payload.get("request")
    refused = store.refuse(
        job_id, model_id=model_id, request=request, error_code=INVALID_REQUEST, problems=problems
    )
    if refused:
        log.warning("job refused on arrival", extra={"job_id": job_id, "problems": problems})
    return refused
