"""Jobs that arrive as a raw Celery message, with their spec in the message, from backends that
neither use the HTTP API nor the Python client (see the README for the message).

The job is validated exactly as a submitted one; a valid job gets its record (the message being
run is its queue entry), a refused one gets a ``failed`` record saying which fields are wrong.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from producer import keys
from producer.contract import JobSpec
from producer.errors import InvalidRequestError
from producer.jobs import JobStatus
from producer.settings import Settings
from producer.store import JobStore, NewJob

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["accept_raw_job"]

log = logging.getLogger("imagegen.intake")

INVALID_REQUEST = "InvalidRequest"


def accept_raw_job(job_id: str, payload: Any, redis: Redis, settings: Settings) -> None:
    """Create the record of a job carried by its message; nothing happens when it exists."""
    if redis.exists(keys.job_key(job_id)):
        return
    now_ms = int(time.time() * 1000)
    try:
        if not isinstance(payload, dict):
            raise InvalidRequestError([])  # reported below as a whole
        spec = JobSpec.parse(
            {**payload, "job_id": job_id},
            allowed_model_ids=settings.allowed_model_ids,
            metadata_max_bytes=settings.metadata_max_bytes,
            webhook_allow_http=settings.webhook_allow_http,
            webhook_allowed_hosts=settings.webhook_allowed_hosts,
        )
    except InvalidRequestError as e:
        problems = "; ".join(str(error) for error in e.errors) or "the job must be a JSON object"
        _refuse(redis, settings, job_id, payload, problems=problems, now_ms=now_ms)
        return
    job = NewJob(
        job_id=job_id, model_id=spec.model_id or settings.model_id, spec=spec, created_ms=now_ms
    )
    JobStore(redis, settings.job_retention_s).create([job], enqueue=False)
    log.info("job accepted from a raw message", extra={"job_id": job_id})


def _refuse(
    redis: Redis, settings: Settings, job_id: str, payload: Any, *, problems: str, now_ms: int
) -> None:
    key = keys.job_key(job_id)
    if not redis.hsetnx(key, "job_id", job_id):
        return
    request = payload.get("request") if isinstance(payload, dict) else None
    redis.hset(
        key,
        mapping={
            "status": JobStatus.FAILED.value,
            "model_id": str(payload.get("model_id") or settings.model_id)
            if isinstance(payload, dict)
            else settings.model_id,
            "priority": "interactive",
            "request": json.dumps(request),
            "metadata": "{}",
            "created_ms": now_ms,
            "finished_ms": now_ms,
            "attempts": 0,
            "error_code": INVALID_REQUEST,
            "error_message": problems[:1000],
        },
    )
    redis.expire(key, settings.job_retention_s)
    redis.publish(keys.EVENTS_CHANNEL, json.dumps({"job_id": job_id, "status": "failed"}))
    log.warning("job refused on arrival", extra={"job_id": job_id, "problems": problems})
