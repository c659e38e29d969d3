"""Reading job records: one, many, a listing page, a batch, the waiting counts, and waiting for a
job to end (on the job's own pub/sub channel)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from imagegen.errors import JobNotFoundError, JobTimeoutError
from imagegen.records import JobRecord, JobStatus
from imagegen.redis import codecs, keys
from imagegen.store.deliveries import Deliveries

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["BatchRecord", "JobEvents", "JobPage", "JobReads"]

# A waiter re-reads its record this often even without an event (a missed message).
WAIT_POLL_S = 1.0
# With a status filter, one listing page looks at most this many times its limit.
LIST_SCAN_FACTOR = 20
_CURSOR_SEPARATOR = "."


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing, newest first; ``next_cursor`` is None on the last page."""

    jobs: list[JobRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    tenant: str | None
    created_ms: int
    job_ids: list[str]


class JobReads:
    """Reads job records (a Redis client with ``decode_responses=True``)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._deliveries = Deliveries(redis)

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
        wanted = [codecs.delivery_ids(fields) for fields in found]
        deliveries = (
            self._deliveries.get_many(d for ids in wanted for d in ids) if any(wanted) else {}
        )
        return [
            codecs.record_from_hash(fields).model_copy(
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

    def batch(self, batch_id: str) -> BatchRecord | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.batch_key(batch_id))
        pipe.lrange(keys.batch_jobs_key(batch_id), 0, -1)
        fields, job_ids = pipe.execute()
        if not fields:
            return None
        return BatchRecord(
            batch_id=batch_id,
            tenant=fields.get("tenant") or None,
            created_ms=int(fields["created_ms"]),
            job_ids=[str(job_id) for job_id in job_ids],
        )

    def open_counts(self, tenant: str | None) -> tuple[int, int]:
        """Jobs not final yet (what the caps count): everybody's, and the tenant's (0 without a
        tenant)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(keys.OPEN_KEY)
        pipe.zcard(keys.tenant_open_key(tenant) if tenant else keys.UNUSED_KEY)
        total, own = pipe.execute()
        return int(total), int(own)

    def page(
        self,
        *,
        tenant: str | None,
        status: JobStatus | None = None,
        batch_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Jobs newest first (a batch's in submission order), optionally of one status.

        ``cursor`` is the ``next_cursor`` of the previous page; it stays valid when the job it
        names has left the index since. With a status filter, one page looks at most
        ``limit * LIST_SCAN_FACTOR`` jobs, so a page may be short and still have a next one."""
        window = limit * (LIST_SCAN_FACTOR if status else 1)
        if batch_id is not None:
            candidates, beyond = self._batch_window(batch_id, cursor, window)
        else:
            index = keys.tenant_jobs_key(tenant) if tenant else keys.JOB_INDEX_KEY
            candidates, beyond = self._index_window(index, cursor, window)
        statuses = self.statuses([c[1] for c in candidates]) if status else [None] * len(candidates)
        chosen: list[str] = []
        stopped_at = len(candidates)
        for position, ((_, job_id), found) in enumerate(zip(candidates, statuses, strict=True)):
            if status is None or found == status.value:
                chosen.append(job_id)
                if len(chosen) == limit:
                    stopped_at = position + 1
                    break
        more = beyond or stopped_at < len(candidates)
        records = [r for r in self.get_many(chosen) if r is not None]
        next_cursor = None
        if more and stopped_at:
            score, job_id = candidates[stopped_at - 1]
            next_cursor = f"{score}{_CURSOR_SEPARATOR}{job_id}"
        return JobPage(records, next_cursor)

    def _index_window(
        self, index: str, cursor: str | None, window: int
    ) -> tuple[list[tuple[int, str]], bool]:
        """Up to ``window`` (score, id) pairs after ``cursor``, and whether more follow."""
        after_ms, after_id = _parse_cursor(cursor)
        rank = self._redis.zrevrank(index, after_id) if after_id else None
        if rank is not None:
            start = int(rank) + 1  # type: ignore[arg-type]
            found = self._redis.zrevrange(index, start, start + window, withscores=True)
        elif after_ms is not None:
            # The cursor's job left the index (trimmed): continue below its time.
            found = self._redis.zrevrangebyscore(
                index, f"({after_ms}", "-inf", start=0, num=window + 1, withscores=True
            )
        else:
            found = self._redis.zrevrange(index, 0, window, withscores=True)
        pairs = [(int(score), str(job_id)) for job_id, score in cast("list[Any]", found)]
        return pairs[:window], len(pairs) > window

    def _batch_window(
        self, batch_id: str, cursor: str | None, window: int
    ) -> tuple[list[tuple[int, str]], bool]:
        batch = self.batch(batch_id)
        ids = batch.job_ids if batch else []
        _, after_id = _parse_cursor(cursor)
        start = ids.index(after_id) + 1 if after_id in ids else 0
        chosen = ids[start : start + window]
        return [(0, job_id) for job_id in chosen], len(ids) > start + window

    def wait(self, job_id: str, timeout_s: float) -> JobRecord:
        """Block until the job is final; raise ``JobTimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self.job_events(job_id) as events:
            while True:
                record = self.get(job_id)
                remaining_s = deadline - time.monotonic()
                if record.is_terminal:
                    return record
                if remaining_s <= 0:
                    raise JobTimeoutError(job_id, timeout_s, record.status.value)
                events.next(min(WAIT_POLL_S, remaining_s))

    @contextmanager
    def job_events(self, job_id: str) -> Iterator[JobEvents]:
        """Subscribe to one job's status changes for the block's length."""
        events = self.subscribe(job_id)
        try:
            yield events
        finally:
            events.close()

    def subscribe(self, job_id: str) -> JobEvents:
        """Subscribe to one job's status changes; ``close()`` when done."""
        return JobEvents(self._redis, keys.job_events_channel(job_id))

    def subscribe_all(self) -> JobEvents:
        """Subscribe to every job's status changes (the fleet's channel); ``close()`` when
        done."""
        return JobEvents(self._redis, keys.EVENTS_CHANNEL)

    def subscribe_tenant(self, tenant: str) -> JobEvents:
        """Subscribe to one tenant's job events (``{"job_id", "status", "place"}``: created,
        started, final); ``close()`` when done."""
        return JobEvents(self._redis, keys.tenant_events_channel(tenant))


class JobEvents:
    """A status channel: one job's, one tenant's or the fleet's (one Redis connection while
    open)."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(channel)

    def next(self, timeout_s: float) -> Any:
        """The next event, or None after ``timeout_s``."""
        return self._pubsub.get_message(timeout=timeout_s)

    def close(self) -> None:
        self._pubsub.close()


def _parse_cursor(cursor: str | None) -> tuple[int | None, str | None]:
    """A cursor is ``{created ms}.{job id}``; a bare job id (older cursors) is read too."""
    if not cursor:
        return None, None
    head, separator, tail = cursor.partition(_CURSOR_SEPARATOR)
    if separator and head.isdigit():
        return int(head), tail
    return None, cursor
