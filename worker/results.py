"""The worker's side of the results store: claim a job, record a failed attempt, finish it.

Each transition is one Lua script, so it is atomic and uses the Redis server's clock. A claim
takes a lease: a redelivered message (Redis visibility timeout, a worker killed mid-job) finds
the job either final (skipped), leased by a live attempt (skipped), or free to run again.
Status only moves forward and a final status never changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, cast

from producer import keys
from producer.jobs import JobRecord, JobStatus, record_from_hash
from producer.lua import JOB_LUA
from producer.messages import delivery_message_template

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Claim", "ClaimState", "ResultStore"]

# KEYS: job hash. ARGV: job_id, lease owner, lease_ms, retention_s, webhook grace ms, delivery
# message template. Returns {state, attempts}: claimed | missing | terminal | busy | canceled |
# expired (a deadline passed before the job started).
_CLAIM_LUA = (
    JOB_LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0} end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if terminal[status] then return {'terminal', attempts} end
local now = now_ms()
local retention, grace = tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  finalize(KEYS[1], ARGV[1], 'canceled', now, retention, grace, ARGV[6])
  return {'canceled', attempts}
end
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '')
if status == 'queued' and expires and now >= expires then
  finalize(KEYS[1], ARGV[1], 'expired', now, retention, grace, ARGV[6])
  return {'expired', attempts}
end
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if status == 'running' and lease_until > now then return {'busy', attempts} end
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[2],
           'lease_until_ms', now + tonumber(ARGV[3]), 'next_attempt_ms', '')
redis.call('HSETNX', KEYS[1], 'started_ms', now)
redis.call('EXPIRE', KEYS[1], retention)
if status ~= 'running' then
  unqueue(KEYS[1], ARGV[1])
  announce(ARGV[1], 'running')
  add_delivery(KEYS[1], ARGV[1], 'job.started', now, grace, retention, ARGV[6])
end
return {'claimed', attempts}
"""
)

# KEYS: job hash. ARGV: lease owner, attempt-log line, retry delay ms, error code, error message.
# Gives the lease back so the retry message can claim the job. Returns 1, or 0 if not ours.
_RELEASE_LUA = (
    JOB_LUA
    + """
if not held_by(KEYS[1], ARGV[1]) then return 0 end
local log = redis.call('HGET', KEYS[1], 'attempt_log') or ''
redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_until_ms', 0,
           'attempt_log', log .. ARGV[2] .. '\\n',
           'next_attempt_ms', now_ms() + tonumber(ARGV[3]),
           'error_code', ARGV[4], 'error_message', ARGV[5])
redis.call('HINCRBY', '__STATS_KEY__', 'retries|' .. ARGV[4], 1)
return 1
""".replace("__STATS_KEY__", keys.STATS_KEY)
)

# KEYS: job hash. ARGV: lease owner, delay ms. Gives the lease back without using up an attempt
# (the quota had no room). Returns 1, or 0 if not ours.
_DEFER_LUA = (
    JOB_LUA
    + """
if not held_by(KEYS[1], ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_until_ms', 0,
           'next_attempt_ms', now_ms() + tonumber(ARGV[2]))
return 1
"""
)

# KEYS: job hash. ARGV: job_id, final status, retention_s, attempt-log line ('' for none),
# webhook grace ms, delivery message template, then field/value pairs.
# Returns {1, delivery id or ''}, or {0, ''} when the job was already final (nothing changes).
_FINISH_LUA = (
    JOB_LUA
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or terminal[status] then return {0, ''} end
for i = 7, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[4] ~= '' then
  local log = redis.call('HGET', KEYS[1], 'attempt_log') or ''
  redis.call('HSET', KEYS[1], 'attempt_log', log .. ARGV[4] .. '\\n')
end
local delivery = finalize(KEYS[1], ARGV[1], ARGV[2], now_ms(), tonumber(ARGV[3]),
                          tonumber(ARGV[5]), ARGV[6])
return {1, delivery}
"""
)


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    MISSING = "missing"
    TERMINAL = "terminal"
    BUSY = "busy"
    CANCELED = "canceled"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    attempt: int


def attempt_log_line(attempt: int, error_code: str, message: str, retry_in_s: float | None) -> str:
    entry = {
        "attempt": attempt,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "error_code": error_code,
        "message": message[:300],
        "retry_in_s": None if retry_in_s is None else round(retry_in_s, 3),
    }
    return json.dumps(entry, separators=(",", ":"))


class ResultStore:
    """Job-record transitions for the worker (a Redis client with ``decode_responses=True``)."""

    def __init__(self, redis: Redis, retention_s: int, webhook_grace_s: float = 30.0) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._webhook_grace_ms = round(webhook_grace_s * 1000)
        self._claim = redis.register_script(_CLAIM_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._finish = redis.register_script(_FINISH_LUA)
        self._defer = redis.register_script(_DEFER_LUA)

    @property
    def redis(self) -> Redis:
        return self._redis

    def get(self, job_id: str) -> JobRecord | None:
        fields = self._redis.hgetall(keys.job_key(job_id))
        return record_from_hash(cast("dict[str, str]", fields)) if fields else None

    def claim(self, job_id: str, owner: str, lease_ms: int) -> Claim:
        state, attempts = self._claim(
            keys=[keys.job_key(job_id)],
            args=[
                job_id,
                owner,
                lease_ms,
                self._retention_s,
                self._webhook_grace_ms,
                delivery_message_template(),
            ],
        )
        return Claim(ClaimState(state), int(attempts))

    def cancel_requested(self, job_id: str) -> bool:
        return self._redis.hget(keys.job_key(job_id), "cancel_requested") == "1"

    def release_for_retry(
        self,
        job_id: str,
        owner: str,
        *,
        attempt: int,
        error_code: str,
        message: str,
        delay_s: float,
    ) -> bool:
        line = attempt_log_line(attempt, error_code, message, delay_s)
        released = self._release(
            keys=[keys.job_key(job_id)],
            args=[owner, line, round(delay_s * 1000), error_code, message[:1000]],
        )
        return bool(released)

    def defer(self, job_id: str, owner: str, delay_s: float) -> bool:
        """Give the job back for ``delay_s`` without counting this run as an attempt."""
        return bool(self._defer(keys=[keys.job_key(job_id)], args=[owner, round(delay_s * 1000)]))

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        fields: dict[str, str | int | None],
        log_line: str = "",
    ) -> bool:
        """Write the final status and its fields; False when the job was already final."""
        if not status.is_terminal:
            msg = f"{status} is not a final status"
            raise ValueError(msg)
        argv: list[str | int] = [
            job_id,
            status.value,
            self._retention_s,
            log_line,
            self._webhook_grace_ms,
            delivery_message_template(),
        ]
        for name, value in fields.items():
            argv += [name, "" if value is None else value]
        changed, _delivery = self._finish(keys=[keys.job_key(job_id)], args=argv)
        return bool(changed)

    def count_generated_image(self, model_id: str) -> None:
        """One more image Bedrock returned (and billed), for the fleet's spend estimate."""
        self._redis.hincrby(keys.STATS_KEY, f"images|{model_id}", 1)

    def park_image(self, job_id: str, image_base64: str) -> None:
        """Keep a bought image whose upload failed, for the next attempt to upload."""
        self._redis.set(keys.parked_image_key(job_id), image_base64, ex=self._retention_s)

    def parked_image(self, job_id: str) -> str | None:
        return cast("str | None", self._redis.get(keys.parked_image_key(job_id)))

    def drop_parked_image(self, job_id: str) -> None:
        self._redis.delete(keys.parked_image_key(job_id))
