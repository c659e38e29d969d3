"""A tenant's job indexes for finding jobs without reading them: by model, by word of the
prompt, and by final status, each a sorted set of job ids scored by creation time (ms).

Filing a new job (``file_new``) happens right after the submission's transaction, in one
pipelined round trip: the model's set, one set per word (``prompt_words``), and the tenant's
``unsettled`` set (or, for a job the cache served at once, its status set). The same pipeline
announces the job on its tenant's events channel (its later changes are announced by the Lua
transitions themselves).

A job's status changes after it is filed, in the Lua transitions, so the status sets are filled
by whoever reads next (``settle``): ``ZDIFF unsettled open`` names the filed jobs that are no
longer open (the tenant's open set is kept by the transitions), and each one's status is read
once, from its record, and filed. A settle runs at most once a second per tenant for readers,
and once every 10 s from the submissions, so ``unsettled`` holds little more than the tenant's
open jobs even when nobody reads. A replayed job (final, then open again) is put back by the
readers that meet it (``refile``).

Every set expires a job retention after its last write. Its members older than the retention
(and, for a word's set, past its newest ``WORD_JOBS_KEPT``) are trimmed by one write in
``TRIM_EVERY`` on average, chosen at random, so a set outgrows its bound by a few entries at
most, and filing a job costs two commands per set instead of four.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from imagegen.records import TERMINAL_STATUSES
from imagegen.redis import keys
from imagegen.store.prompt_words import words

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["FiledJob", "JobIndex"]

log = logging.getLogger("imagegen.index")

WORD_JOBS_KEPT = 100_000
# Settling: at most once this often per tenant, for readers and for submissions.
READ_SETTLE_EVERY_MS = 1_000
WRITE_SETTLE_EVERY_MS = 10_000
SETTLE_CHUNK = 1_000
# A set written is trimmed with a chance of one in this many.
TRIM_EVERY = 8
_FINAL = frozenset(status.value for status in TERMINAL_STATUSES)


class FiledJob(NamedTuple):
    """What the indexes know of a new job."""

    job_id: str
    tenant: str
    model_id: str
    created_ms: int
    prompt: str
    # Its status when it was created final at once (served by the cache), else None.
    final_status: str | None = None


class JobIndex:
    """The tenant job indexes on a Redis client with ``decode_responses=True``."""

    def __init__(self, redis: Redis, retention_s: int) -> None:
        self._redis = redis
        self.retention_ms = retention_s * 1000

    # -- filing new jobs ---------------------------------------------------------------------

    def file_new(self, jobs: Sequence[FiledJob]) -> None:
        """Index the new jobs and announce them on their tenants' channels (one round trip;
        a second when a settle is due)."""
        if not jobs:
            return
        now_ms = int(time.time() * 1000)
        written: dict[str, bool] = {}  # key -> whether it is a word's set
        pipe = self._redis.pipeline(transaction=False)
        for job in jobs:
            for key, is_word in self._keys_of(job):
                pipe.zadd(key, {job.job_id: job.created_ms})
                written[key] = is_word
            if job.final_status is None:
                message = {"job_id": job.job_id, "status": "queued", "place": "new"}
                pipe.publish(keys.tenant_events_channel(job.tenant), json.dumps(message))
        sampled = {key: word for key, word in written.items() if random.random() < 1 / TRIM_EVERY}
        self._trim(pipe, sampled, now_ms)
        for key in written.keys() - sampled.keys():
            pipe.pexpire(key, self.retention_ms)
        tenants = sorted({job.tenant for job in jobs})
        for tenant in tenants:
            pipe.set(
                keys.tenant_settling_key(tenant, "write"), "1", nx=True, px=WRITE_SETTLE_EVERY_MS
            )
        due = pipe.execute()[-len(tenants) :]
        for tenant, taken in zip(tenants, due, strict=True):
            if taken:
                self._settle(tenant)

    def _keys_of(self, job: FiledJob) -> Iterable[tuple[str, bool]]:
        tenant = job.tenant
        yield keys.tenant_model_jobs_key(tenant, job.model_id), False
        for word in words(job.prompt):
            yield keys.tenant_word_jobs_key(tenant, word), True
        if job.final_status is not None:
            yield keys.tenant_status_jobs_key(tenant, job.final_status), False
        else:
            yield keys.tenant_unsettled_key(tenant), False

    def _trim(self, pipe: Any, written: dict[str, bool], now_ms: int) -> None:
        oldest = now_ms - self.retention_ms
        for key, is_word in written.items():
            pipe.zremrangebyscore(key, "-inf", f"({oldest}")
            if is_word:
                pipe.zremrangebyrank(key, 0, -(WORD_JOBS_KEPT + 1))
            pipe.pexpire(key, self.retention_ms)

    # -- filing final statuses ---------------------------------------------------------------

    def settle(self, tenant: str) -> int:
        """File by status the tenant's jobs that became final since the last settle, unless one
        ran in the last second; returns how many were filed."""
        taken = self._redis.set(
            keys.tenant_settling_key(tenant, "read"), "1", nx=True, px=READ_SETTLE_EVERY_MS
        )
        return self._settle(tenant) if taken else 0

    def _settle(self, tenant: str) -> int:
        unsettled = keys.tenant_unsettled_key(tenant)
        done = cast("list[str]", self._redis.zdiff([unsettled, keys.tenant_open_key(tenant)]))
        filed = 0
        for start in range(0, len(done), SETTLE_CHUNK):
            filed += self._file_statuses(tenant, done[start : start + SETTLE_CHUNK])
        return filed

    def _file_statuses(self, tenant: str, job_ids: list[str]) -> int:
        unsettled = keys.tenant_unsettled_key(tenant)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zmscore(unsettled, job_ids)
        for job_id in job_ids:
            pipe.hget(keys.job_key(job_id), "status")
        scores, *statuses = pipe.execute()
        by_status: dict[str, dict[str, float]] = defaultdict(dict)
        gone: list[str] = []
        for job_id, score, status in zip(job_ids, scores, statuses, strict=True):
            if status in _FINAL and score is not None:
                by_status[status][job_id] = score
            elif status is None:
                gone.append(job_id)  # its record expired: nothing to file
        pipe = self._redis.pipeline(transaction=False)
        for status, members in by_status.items():
            pipe.zadd(keys.tenant_status_jobs_key(tenant, status), members)
        settled = [job_id for members in by_status.values() for job_id in members] + gone
        if settled:
            pipe.zrem(unsettled, *settled)
        written = {keys.tenant_status_jobs_key(tenant, status): False for status in by_status}
        self._trim(pipe, written, int(time.time() * 1000))
        pipe.execute()
        return len(settled) - len(gone)

    def refile(self, tenant: str, filed_as: str, job_ids: Sequence[str]) -> None:
        """Take jobs out of the status set they were filed in (``filed_as``) when their record
        says otherwise (a replayed job is open again): they are filed again at the next settle."""
        if not job_ids:
            return
        status_key = keys.tenant_status_jobs_key(tenant, filed_as)
        scores = self._redis.zmscore(status_key, list(job_ids))
        back = {job_id: s for job_id, s in zip(job_ids, scores, strict=True) if s is not None}
        if not back:
            return
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(status_key, *back)
        pipe.zadd(keys.tenant_unsettled_key(tenant), back)
        pipe.pexpire(keys.tenant_unsettled_key(tenant), self.retention_ms)
        pipe.execute()
        log.info("jobs filed again", extra={"tenant": tenant, "jobs": len(back)})
