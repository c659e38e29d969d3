"""The Redis key schema, in one place. Every key the service writes is built here.

=====================================  ======  =================================================
key                                    type    what it holds
=====================================  ======  =================================================
``imagegen:job:{job_id}``              hash    the job record (fields: see ``producer.jobs``);
                                               expires ``job_retention_s`` after its last change
``imagegen:job:{job_id}:parked-image`` string  image bytes bought from Bedrock whose S3 upload
                                               failed, so a retry uploads them instead of
                                               paying for a new one (expires with the record)
``imagegen:jobs``                      zset    job ids scored by creation time (ms), for listing;
                                               trimmed past the retention
``imagegen:events``                    pubsub  one JSON message per job status change
``imagegen:dlq``                       zset    failed job ids scored by failure time (ms)
``imagegen:limiter:{region}:{model}``  hash    the shared token bucket of one Bedrock quota:
                                               ``tokens``, ``updated_ms``, ``rate_rpm``
                                               (effective), ``configured_rpm``,
                                               ``last_decrease_ms``, ``throttles_total``
``...:{model}:calls``                  zset    Bedrock calls granted, scored by time (ms), one
                                               minute kept
``...:{model}:throttles``              zset    ThrottlingExceptions seen, one minute kept
``...:{model}:inflight``               zset    concurrency-cap leases, scored by expiry (ms)
``imagegen:webhook:{delivery_id}``     hash    one webhook delivery (``{job_id}:{event}``, with
                                               ``:{n}`` after the n-th replay): url, state,
                                               attempts, log (JSON lines), webhook_id
``imagegen:webhooks:due``              zset    the outbox: undelivered deliveries scored by
                                               when they are due (ms)
``imagegen:webhooks:dlq``              zset    deliveries whose retries ran out, by time (ms)
``imagegen:webhooks:disabled``         set     endpoint URLs that answered 410 Gone
``imagegen:webhooks:secrets``          string  signing secrets, JSON, newest first
``imagegen:webhooks:sweep-lock``       string  held by the one sweeper running at a time
``interactive``, ``batch``,            list    Celery queues (kombu's Redis transport owns them)
``webhooks``
=====================================  ======  =================================================
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "DLQ_KEY",
    "EVENTS_CHANNEL",
    "JOB_INDEX_KEY",
    "WEBHOOKS_DISABLED_KEY",
    "WEBHOOKS_DLQ_KEY",
    "WEBHOOKS_DUE_KEY",
    "WEBHOOK_KEY_PREFIX",
    "WEBHOOK_SECRETS_KEY",
    "WEBHOOK_SWEEP_LOCK_KEY",
    "LimiterKeys",
    "job_key",
    "limiter_keys",
    "parked_image_key",
    "webhook_key",
]

PREFIX = "imagegen"
JOB_INDEX_KEY = f"{PREFIX}:jobs"
EVENTS_CHANNEL = f"{PREFIX}:events"
DLQ_KEY = f"{PREFIX}:dlq"
WEBHOOK_KEY_PREFIX = f"{PREFIX}:webhook:"
WEBHOOKS_DUE_KEY = f"{PREFIX}:webhooks:due"
WEBHOOKS_DLQ_KEY = f"{PREFIX}:webhooks:dlq"
WEBHOOKS_DISABLED_KEY = f"{PREFIX}:webhooks:disabled"
WEBHOOK_SECRETS_KEY = f"{PREFIX}:webhooks:secrets"
WEBHOOK_SWEEP_LOCK_KEY = f"{PREFIX}:webhooks:sweep-lock"


def job_key(job_id: str) -> str:
    """The hash holding one job's record."""
    return f"{PREFIX}:job:{job_id}"


def webhook_key(delivery_id: str) -> str:
    """The hash holding one webhook delivery."""
    return f"{WEBHOOK_KEY_PREFIX}{delivery_id}"


def parked_image_key(job_id: str) -> str:
    """Image bytes waiting for a successful S3 upload."""
    return f"{PREFIX}:job:{job_id}:parked-image"


class LimiterKeys(NamedTuple):
    """The keys of one quota (one region and model id)."""

    bucket: str
    calls: str
    throttles: str
    inflight: str


def limiter_keys(region: str, model_id: str) -> LimiterKeys:
    base = f"{PREFIX}:limiter:{region}:{model_id}"
    return LimiterKeys(base, f"{base}:calls", f"{base}:throttles", f"{base}:inflight")
