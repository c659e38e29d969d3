"""The sweeper: sends every webhook delivery that is due and that no task has taken, and ends
jobs whose deadline (``expires_at``) passed before they started.

Retries wait in the outbox sorted set, so a delay of hours is a score, not a Celery countdown
held by a worker (which the Redis visibility timeout would redeliver). Each worker process runs a
sweeper thread; a lock in Redis lets one of them work at a time. A due delivery gets a fresh
message on the ``webhooks`` queue and its score moves ``webhook_handoff_grace_s`` ahead, so a
message lost with a dead worker is sent again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING

import redis as redis_lib

from producer import keys
from producer.lua import JOB_LUA
from producer.messages import DELIVERY_ID_PLACEHOLDER, WEBHOOK_QUEUE, delivery_message_template
from producer.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["OutboxSweeper"]

log = logging.getLogger("imagegen.sweeper")

_BATCH = 500
_LOCK_INTERVALS = 5

# KEYS: due zset. ARGV: batch size, grace ms, message template. Queues a delivery message for
# each due entry and moves it ahead by the grace. Returns the ids.
_SWEEP_LUA = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
  local message = string.gsub(ARGV[3], '{DELIVERY_ID_PLACEHOLDER}', id)
  redis.call('LPUSH', '{WEBHOOK_QUEUE}', message)
end
return due
"""

# KEYS: deadlines zset. ARGV: batch size, retention_s, webhook grace ms, delivery template.
# Ends every job whose deadline passed before it started as `expired`. Returns the ids.
_EXPIRE_LUA = (
    JOB_LUA
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local expired = {}
for _, id in ipairs(due) do
  local key = '__JOB_KEY_PREFIX__' .. id
  if redis.call('HGET', key, 'status') == 'queued' then
    finalize(key, id, 'expired', now, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
    table.insert(expired, id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return expired
""".replace("__JOB_KEY_PREFIX__", keys.JOB_KEY_PREFIX)
)

# KEYS: lock. ARGV: token, ttl ms. Take the lock, or keep it when it is ours.
_LOCK_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"""


class OutboxSweeper:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._interval_s = settings.webhook_sweep_interval_s
        self._grace_ms = round(settings.webhook_handoff_grace_s * 1000)
        self._retention_s = settings.job_retention_s
        self._token = uuid.uuid4().hex
        self._sweep = redis.register_script(_SWEEP_LUA)
        self._expire = redis.register_script(_EXPIRE_LUA)
        self._lock = redis.register_script(_LOCK_LUA)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> list[str]:
        """End jobs past their deadline and queue every due delivery, if this sweeper holds the
        lock; returns the ids of the deliveries queued."""
        lock_ms = round(self._interval_s * _LOCK_INTERVALS * 1000)
        if not self._lock(keys=[keys.WEBHOOK_SWEEP_LOCK_KEY], args=[self._token, lock_ms]):
            return []
        expired = self._expire(
            keys=[keys.DEADLINES_KEY],
            args=[_BATCH, self._retention_s, self._grace_ms, delivery_message_template()],
        )
        if expired:
            log.info("jobs expired past their deadline", extra={"jobs": len(expired)})
        due = self._sweep(
            keys=[keys.WEBHOOKS_DUE_KEY], args=[_BATCH, self._grace_ms, delivery_message_template()]
        )
        ids = [str(item) for item in due]
        if ids:
            log.info("due webhook deliveries queued", extra={"deliveries": len(ids)})
        return ids

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s * 2 + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sweep_once()
            except redis_lib.RedisError:
                log.warning("webhook sweeper cannot reach Redis; trying again", exc_info=True)
