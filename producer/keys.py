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
``interactive``, ``batch``             list    Celery queues (kombu's Redis transport owns them)
=====================================  ======  =================================================
"""

from __future__ import annotations

__all__ = [
    "EVENTS_CHANNEL",
    "JOB_INDEX_KEY",
    "job_key",
    "parked_image_key",
]

PREFIX = "imagegen"
JOB_INDEX_KEY = f"{PREFIX}:jobs"
EVENTS_CHANNEL = f"{PREFIX}:events"


def job_key(job_id: str) -> str:
    """The hash holding one job's record."""
    return f"{PREFIX}:job:{job_id}"


def parked_image_key(job_id: str) -> str:
    """Image bytes waiting for a successful S3 upload."""
    return f"{PREFIX}:job:{job_id}:parked-image"
