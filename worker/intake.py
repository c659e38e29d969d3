"""Jobs that arrive as a raw Celery message, with their spec in the message, from backends that
neither use the HTTP API nor the Python client (see the README for the message).

The job is validated exactly as a submitted one; a valid job gets its record (the message being
run is its queue entry), a refused one gets a ``failed`` record saying which fields are wrong.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from imagegen.contract import JobSpec
from imagegen.errors import InvalidRequestError
from imagegen.records import NewJob
from imagegen.settings import Settings
from imagegen.ssrf import WebhookUrlError, vet_configured
from imagegen.store.jobs import JobStore

__all__ = ["accept_raw_job"]

log = logging.getLogger("imagegen.intake")

INVALID_REQUEST = "InvalidRequest"


def accept_raw_job(job_id: str, payload: Any, store: JobStore, settings: Settings) -> None:
    """Create the record of a job carried by its message; nothing happens when it exists."""
    if store.exists(job_id):
        return
    try:
        if not isinstance(payload, dict):
            raise InvalidRequestError([])  # reported below as a whole
        spec = JobSpec.parse({**payload, "job_id": job_id}, **settings.contract_context())
        if spec.webhook_url:
            vet_configured(spec.webhook_url, settings)
    except InvalidRequestError as e:
        problems = "; ".join(str(error) for error in e.errors) or "the job must be a JSON object"
        _refuse(store, settings, job_id, payload, problems)
        return
    except WebhookUrlError as e:
        _refuse(store, settings, job_id, payload, f"webhook_url: {e}")
        return
    job = NewJob(
        job_id=job_id,
        model_id=spec.model_id or settings.model_id,
        spec=spec,
        created_ms=int(time.time() * 1000),
    )
    store.create([job], enqueue=False)
    log.info("job accepted from a raw message", extra={"job_id": job_id})


def _refuse(store: JobStore, settings: Settings, job_id: str, payload: Any, problems: str) -> None:
    model_id = settings.model_id
    request = None
    if isinstance(payload, dict):
        model_id = str(payload.get("model_id") or settings.model_id)
        request = payload.get("request")
    if store.refuse(
        job_id, model_id=model_id, request=request, error_code=INVALID_REQUEST, problems=problems
    ):
        log.warning("job refused on arrival", extra={"job_id": job_id, "problems": problems})
