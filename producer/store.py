"""The producer's side of the results store: create-and-enqueue, read, list, wait, cancel.

The worker's side (claim, retry, finish) is ``worker.results``; both use ``producer.keys`` and
the Lua in ``producer.lua``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from producer import keys
from producer.contract import JobSpec
from producer.errors import JobNotFoundError, JobTimeoutError
from producer.jobs import JobRecord, JobStatus, record_from_hash
from producer.lua import JOB_LUA
from producer.messages import GENERATE_TASK, delivery_message_template, task_message
from producer.outbox import Deliveries

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["CancelOutcome", "CreateOutcome", "JobPage", "JobStore", "NewJob"]

IDEMPOTENCY_TTL_S = 24 * 3600

# Creates the record, indexes it and queues its task, atomically.
# KEYS: 1 job hash, 2 job index, 3 queue list, 4 tenant job index, 5 queued set,
#       6 tenant queued set, 7 idempotency key, 8 deadlines set, 9 batch job list.
# ARGV: 1 retention_s, 2 created_ms, 3 job_id, 4 message ('' = do not queue), 5 idempotency
#       value ('' = none), 6 expires_ms ('' = none), 7 tenant ('' = none), 8 batch ('' = none),
#       then the record's field/value pairs.
# Returns {'created', ''}, {'exists', ''} or {'idempotent', '<request sha256> <job id>'}.
_SUBMIT_LUA = """
if ARGV[5] ~= '' then
  local earlier = redis.call('GET', KEYS[7])
  if earlier then return {'idempotent', earlier} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
local retention, created = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], retention)
local oldest = created - 1000 * retention
redis.call('ZADD', KEYS[2], created, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', oldest)
redis.call('ZADD', KEYS[5], created, ARGV[3])
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], created, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', oldest)
  redis.call('ZADD', KEYS[6], created, ARGV[3])
end
if ARGV[5] ~= '' then redis.call('SET', KEYS[7], ARGV[5], 'EX', __IDEMPOTENCY_TTL_S__) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[8], tonumber(ARGV[6]), ARGV[3]) end
if ARGV[8] ~= '' then redis.call('RPUSH', KEYS[9], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[4]) end
return {'created', ''}
""".replace("__IDEMPOTENCY_TTL_S__", str(IDEMPOTENCY_TTL_S))

# KEYS: job hash. ARGV: job_id, retention_s, webhook grace ms, delivery message template.
# Returns canceled (it was queued), requested (running: the worker stops before the Bedrock call
# or the upload), terminal or missing.
_CANCEL_LUA = (
    JOB_LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if terminal[status] then return 'terminal' end
if status == 'queued' then
  finalize(KEYS[1], ARGV[1], 'canceled', now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]),
           ARGV[4])
  return 'canceled'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 'requested'
"""
)

_WAIT_POLL_S = 1.0
_LIST_SCAN_FACTOR = 20


class CreateOutcome(StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # the job id was taken
    IDEMPOTENT = "idempotent"  # the idempotency key was seen before


class CancelOutcome(StrEnum):
    CANCELED = "canceled"
    REQUESTED = "requested"
    TERMINAL = "terminal"
    MISSING = "missing"


@dataclass(frozen=True)
class NewJob:
    """A validated job about to be stored: its id, model and owner are settled."""

    job_id: str
    model_id: str
    spec: JobSpec
    created_ms: int
    tenant: str | None = None
    batch_id: str | None = None
    idempotency_key: str | None = None

    @property
    def request_sha256(self) -> str:
        """What an idempotency key stands for: the whole submitted job."""
        canonical = self.spec.model_dump_json(exclude={"job_id"})
        return hashlib.sha256(f"{self.model_id}\n{canonical}".encode()).hexdigest()

    @property
    def expires_ms(self) -> int | None:
        expires_at = self.spec.expires_at
        return round(expires_at.timestamp() * 1000) if expires_at else None

    def hash_fields(self) -> dict[str, str]:
        optional: dict[str, str | int | None] = {
            "webhook_url": self.spec.webhook_url,
            "webhook_events": ",".join(self.spec.events) if self.spec.webhook_url else None,
            "tenant": self.tenant,
            "batch_id": self.batch_id,
            "expires_ms": self.expires_ms,
        }
        return {
            **{name: str(value) for name, value in optional.items() if value is not None},
            "job_id": self.job_id,
            "status": JobStatus.QUEUED.value,
            "model_id": self.model_id,
            "priority": self.spec.priority,
            "request": self.spec.request.model_dump_json(),
            "metadata": json.dumps(self.spec.metadata, separators=(",", ":")),
            "created_ms": str(self.created_ms),
            "attempts": "0",
        }


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing, newest first; ``next_cursor`` is None on the last page."""

    jobs: list[JobRecord]
    next_cursor: str | None


class JobStore:
    """Reads and creates job records in Redis (a client built with ``decode_responses=True``)."""

    def __init__(self, redis: Redis, retention_s: int, webhook_grace_s: float = 30.0) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._webhook_grace_ms = round(webhook_grace_s * 1000)
        self._submit = redis.register_script(_SUBMIT_LUA)
        self._cancel = redis.register_script(_CANCEL_LUA)
        self._deliveries = Deliveries(redis)

    # -- writing -----------------------------------------------------------------------------

    def create(
        self, jobs: Sequence[NewJob], *, enqueue: bool = True
    ) -> list[tuple[CreateOutcome, str]]:
        """Store (and unless ``enqueue`` is False, queue) each job in one round trip.

        Returns per job the outcome and, for ``IDEMPOTENT``, ``"<request sha256> <job id>"`` of
        the job the key was first used for."""
        pipe = self._redis.pipeline(transaction=False)
        for job in jobs:
            message = (
                task_message(GENERATE_TASK, job.job_id, [job.job_id], job.spec.priority)
                if enqueue
                else ""
            )
            idempotency = f"{job.request_sha256} {job.job_id}" if job.idempotency_key else ""
            expires_ms = job.expires_ms
            argv = [
                str(self._retention_s),
                str(job.created_ms),
                job.job_id,
                message,
                idempotency,
                "" if expires_ms is None else str(expires_ms),
                job.tenant or "",
                job.batch_id or "",
            ]
            for name, value in job.hash_fields().items():
                argv += [name, value]
            tenant = job.tenant
            self._submit(
                keys=[
                    keys.job_key(job.job_id),
                    keys.JOB_INDEX_KEY,
                    job.spec.priority,
                    keys.tenant_jobs_key(tenant) if tenant else keys.UNUSED_KEY,
                    keys.QUEUED_KEY,
                    keys.tenant_queued_key(tenant) if tenant else keys.UNUSED_KEY,
                    keys.idempotency_key(tenant, job.idempotency_key)
                    if job.idempotency_key
                    else keys.UNUSED_KEY,
                    keys.DEADLINES_KEY,
                    keys.batch_jobs_key(job.batch_id) if job.batch_id else keys.UNUSED_KEY,
                ],
                args=argv,
                client=pipe,
            )
        return [(CreateOutcome(state), str(detail)) for state, detail in pipe.execute()]

    def create_batch(self, batch_id: str, tenant: str | None, size: int, created_ms: int) -> None:
        self._redis.hset(
            keys.batch_key(batch_id),
            mapping={
                "batch_id": batch_id,
                "tenant": tenant or "",
                "size": size,
                "created_ms": created_ms,
            },
        )
        self._redis.expire(keys.batch_key(batch_id), self._retention_s)
        self._redis.expire(keys.batch_jobs_key(batch_id), self._retention_s)

    def cancel(self, job_id: str) -> CancelOutcome:
        outcome = self._cancel(
            keys=[keys.job_key(job_id)],
            args=[job_id, self._retention_s, self._webhook_grace_ms, delivery_message_template()],
        )
        return CancelOutcome(outcome)

    # -- reading -----------------------------------------------------------------------------

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

    def statuses(self, job_ids: Sequence[str]) -> list[str | None]:
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job_key(job_id), "status")
        return [cast("str | None", status) for status in pipe.execute()]

    def batch(self, batch_id: str) -> tuple[dict[str, str], list[str]] | None:
        """A batch's record and its job ids, or None."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.batch_key(batch_id))
        pipe.lrange(keys.batch_jobs_key(batch_id), 0, -1)
        fields, job_ids = pipe.execute()
        if not fields:
            return None
        return cast("dict[str, str]", fields), [str(job_id) for job_id in job_ids]

    def queued_counts(self, tenant: str | None) -> tuple[int, int]:
        """Jobs not started yet: everybody's, and the tenant's (0 without a tenant)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(keys.QUEUED_KEY)
        pipe.zcard(keys.tenant_queued_key(tenant) if tenant else keys.UNUSED_KEY)
        total, own = pipe.execute()
        return int(total), int(own)

    def list(
        self,
        *,
        tenant: str | None,
        status: JobStatus | None = None,
        batch_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Jobs newest first (a batch's in submission order), optionally of one status.

        ``cursor`` is the ``next_cursor`` of the previous page. With a status filter, one page
        looks at most ``limit * 20`` jobs, so a page may be short and still have a next one."""
        window = limit * (_LIST_SCAN_FACTOR if status else 1)
        if batch_id is not None:
            batch = self.batch(batch_id)
            ids = batch[1] if batch else []
            start = ids.index(cursor) + 1 if cursor in ids else 0
            candidates = ids[start : start + window]
            beyond = len(ids) > start + window
        else:
            index = keys.tenant_jobs_key(tenant) if tenant else keys.JOB_INDEX_KEY
            rank = self._redis.zrevrank(index, cursor) if cursor else None
            start = 0 if rank is None else int(rank) + 1  # type: ignore[arg-type]
            candidates = [str(i) for i in self._redis.zrevrange(index, start, start + window)]
            beyond = len(candidates) > window
            candidates = candidates[:window]
        statuses = self.statuses(candidates) if status else [None] * len(candidates)
        chosen: list[str] = []
        stopped_at = len(candidates)
        for position, (job_id, found) in enumerate(zip(candidates, statuses, strict=True)):
            if status is None or found == status.value:
                chosen.append(job_id)
                if len(chosen) == limit:
                    stopped_at = position + 1
                    break
        more = beyond or stopped_at < len(candidates)
        records = [r for r in self.get_many(chosen) if r is not None]
        next_cursor = candidates[stopped_at - 1] if more and stopped_at else None
        return JobPage(records, next_cursor)

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
