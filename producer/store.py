"""The producer's side of the results store: create-and-enqueue, read, wait.

The worker's side (claim, retry, finish) is ``worker.results``; both use ``producer.keys``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from producer import keys
from producer.contract import JobSpec
from producer.errors import JobNotFoundError, JobTimeoutError
from producer.jobs import JobRecord, JobStatus, record_from_hash
from producer.messages import GENERATE_TASK, task_message
from producer.outbox import Deliveries

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["JobStore", "NewJob"]

# Creates the record, indexes it and queues its task, atomically; does nothing when the id exists.
# KEYS: job hash, job index, queue list.
# ARGV: retention_s, created_ms, job_id, message, then the record's field/value pairs.
_SUBMIT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - 1000 * tonumber(ARGV[1]))
redis.call('LPUSH', KEYS[3], ARGV[4])
return 1
"""

_WAIT_POLL_S = 1.0


@dataclass(frozen=True)
class NewJob:
    """A validated job about to be stored: its id and model are settled."""

    job_id: str
    model_id: str
    spec: JobSpec
    created_ms: int

    def hash_fields(self) -> dict[str, str]:
        webhook = {}
        if self.spec.webhook_url:
            webhook = {
                "webhook_url": self.spec.webhook_url,
                "webhook_events": ",".join(self.spec.events),
            }
        return {
            **webhook,
            "job_id": self.job_id,
            "status": JobStatus.QUEUED.value,
            "model_id": self.model_id,
            "priority": self.spec.priority,
            "request": self.spec.request.model_dump_json(),
            "metadata": json.dumps(self.spec.metadata, separators=(",", ":")),
            "created_ms": str(self.created_ms),
            "attempts": "0",
        }


class JobStore:
    """Reads and creates job records in Redis (a client built with ``decode_responses=True``)."""

    def __init__(self, redis: Redis, retention_s: int) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._submit = redis.register_script(_SUBMIT_LUA)
        self._deliveries = Deliveries(redis)

    def create(self, jobs: Sequence[NewJob]) -> list[bool]:
        """Store and enqueue each job in one round trip; False where the id already existed."""
        pipe = self._redis.pipeline(transaction=False)
        for job in jobs:
            message = task_message(GENERATE_TASK, job.job_id, [job.job_id], job.spec.priority)
            argv = [str(self._retention_s), str(job.created_ms), job.job_id, message]
            for name, value in job.hash_fields().items():
                argv += [name, value]
            self._submit(
                keys=[keys.job_key(job.job_id), keys.JOB_INDEX_KEY, job.spec.priority],
                args=argv,
                client=pipe,
            )
        return [bool(created) for created in pipe.execute()]

    def get(self, job_id: str) -> JobRecord:
        record = self.get_many([job_id])[0]
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        """Records in the order asked (None where there is none), with their webhook
        deliveries: two round trips at most."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job_key(job_id))
        found = [cast("dict[str, str]", fields) for fields in pipe.execute()]
        wanted = [
            [d for d in fields.get("webhook_deliveries", "").split(",") if d] for fields in found
        ]
        deliveries = (
            self._deliveries.get_many(d for ids in wanted for d in ids) if any(wanted) else {}
        )
        return [
            record_from_hash(fields).model_copy(
                update={"webhooks": [deliveries[d] for d in ids if d in deliveries]}
            )
            if fields
            else None
            for fields, ids in zip(found, wanted, strict=True)
        ]

    def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        """Block until the job is terminal; raise ``JobTimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._redis.pubsub(ignore_subscribe_messages=True) as events:  # type: ignore[no-untyped-call]
            events.subscribe(keys.EVENTS_CHANNEL)
            while True:
                record = self.get(job_id)
                remaining_s = deadline - time.monotonic()
                if record.is_terminal:
                    return record
                if remaining_s <= 0:
                    raise JobTimeoutError(job_id, timeout_s, record.status.value)
                # Wake on any status event, and poll anyway in case one was missed.
                events.get_message(timeout=min(_WAIT_POLL_S, remaining_s))
