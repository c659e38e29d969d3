"""The dead-letter set: failed jobs, listed and replayed by an operator.

Replaying is the one way a final status is reopened: the job keeps its id, its request and its
attempt log, goes back to ``queued`` with its attempts reset, and its message is queued again,
in one Lua script. Its ``replays`` count says how often that happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from producer import keys
from producer.jobs import JobRecord, record_from_hash
from producer.messages import GENERATE_TASK, task_message

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["DeadLetters"]

# KEYS: job hash, dlq, queue. ARGV: job_id, message, retention_s. Returns 1 when requeued.
_REPLAY_LUA = f"""
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'finished_ms', '',
           'started_ms', '', 'next_attempt_ms', '', 'error_code', '', 'error_message', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('PUBLISH', '{keys.EVENTS_CHANNEL}',
           '{{"job_id":"' .. ARGV[1] .. '","status":"queued"}}')
return 1
"""


class DeadLetters:
    def __init__(self, redis: Redis, retention_s: int) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._replay = redis.register_script(_REPLAY_LUA)

    def job_ids(self, limit: int = 1000) -> list[str]:
        """Failed job ids, oldest failure first."""
        return [str(job_id) for job_id in self._redis.zrange(keys.DLQ_KEY, 0, limit - 1)]

    def records(self, limit: int = 1000) -> list[JobRecord]:
        """The failed jobs' records (ids whose record expired are dropped from the set)."""
        found = []
        for job_id in self.job_ids(limit):
            fields = self._redis.hgetall(keys.job_key(job_id))
            if fields:
                found.append(record_from_hash(fields))  # type: ignore[arg-type]
            else:
                self._redis.zrem(keys.DLQ_KEY, job_id)
        return found

    def replay(self, job_ids: Iterable[str]) -> list[str]:
        """Queue these failed jobs again; returns the ids that were replayed."""
        replayed = []
        for job_id in job_ids:
            fields = self._redis.hmget(keys.job_key(job_id), ["priority"])
            queue = str(fields[0] or "interactive")
            message = task_message(GENERATE_TASK, job_id, [job_id], queue)
            if self._replay(
                keys=[keys.job_key(job_id), keys.DLQ_KEY, queue],
                args=[job_id, message, self._retention_s],
            ):
                replayed.append(job_id)
        return replayed
