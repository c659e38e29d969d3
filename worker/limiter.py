"""One Bedrock quota shared by every worker: a token bucket in Redis with an adaptive rate, and
an optional cap on calls in flight.

Why not Celery's ``rate_limit``: it is per worker process, so N processes make N times the rate.
Why not ``throttled-py``: its buckets take the rate from each caller's static configuration and
its token bucket reads the caller's clock in whole seconds; a quota shared by a fleet needs the
effective rate itself to live in Redis (so a ThrottlingException seen by one worker slows all of
them) and a clock every worker agrees on. So the bucket is one Lua script on the server's clock.

Waiting never spins on Redis: ``reserve`` takes a token now even when the bucket is empty (it
goes negative) and says how long to sleep until that token is due. Each call to Bedrock costs
one round trip to the limiter, however many threads are waiting. A wait longer than
``limiter_max_wait_s`` reserves nothing: the job goes back on its queue with a countdown.

Adaptive rate (AIMD): a ThrottlingException multiplies the shared rate by
``rate_decrease_factor`` (once per ``rate_decrease_cooldown_s``, since calls in flight are
throttled together) and empties the bucket; each successful call adds
``rate_increase_fraction`` of the quota back, never above the quota nor below its floor.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from producer import keys
from producer.quota import BUCKET_LUA, QuotaStatus, read_quota
from producer.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Limiter", "LimiterWaitTooLongError", "Reservation"]

_KEY_TTL_MS = 10 * 60_000
_SLOT_POLL_FIRST_S = 0.02
_SLOT_POLL_MAX_S = 0.5

# KEYS: bucket, calls. ARGV: configured_rpm, burst, floor_rpm, max_wait_ms, call id, now ('').
# Returns {granted 0|1, wait_ms, tokens, rate_rpm} (numbers as strings).
_RESERVE_LUA = (
    BUCKET_LUA
    + """
local configured, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = clock(ARGV[6])
local tokens, rate, state = load_bucket(KEYS[1], configured, burst, tonumber(ARGV[3]), now)
local wait_ms = 0
if tokens < 1 then wait_ms = (1 - tokens) * 60000 / rate end
local granted = 0
if wait_ms <= tonumber(ARGV[4]) then
  granted = 1
  tokens = tokens - 1
  redis.call('ZADD', KEYS[2], now + wait_ms, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  redis.call('PEXPIRE', KEYS[2], __KEY_TTL_MS__)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(state.updated),
           'rate_rpm', tostring(rate), 'configured_rpm', tostring(configured))
redis.call('PEXPIRE', KEYS[1], __KEY_TTL_MS__)
return {granted, tostring(wait_ms), tostring(tokens), tostring(rate)}
""".replace("__KEY_TTL_MS__", str(_KEY_TTL_MS))
)

# KEYS: bucket, throttles. ARGV: configured_rpm, burst, floor_rpm, outcome ok|throttled,
# increase_rpm, decrease_factor, cooldown_ms, event id, now (''). Returns the new rate.
_REPORT_LUA = (
    BUCKET_LUA
    + """
local configured, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local now = clock(ARGV[9])
local tokens, rate, state = load_bucket(KEYS[1], configured, burst, floor, now)
local last_decrease, throttles = state.last_decrease, state.throttles_total
if ARGV[4] == 'throttled' then
  throttles = throttles + 1
  redis.call('ZADD', KEYS[2], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  redis.call('PEXPIRE', KEYS[2], __KEY_TTL_MS__)
  if now - last_decrease >= tonumber(ARGV[7]) then
    rate = math.max(floor, rate * tonumber(ARGV[6]))
    last_decrease = now
    tokens = math.min(tokens, 0)
  end
else
  rate = math.min(configured, rate + tonumber(ARGV[5]))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(state.updated),
           'rate_rpm', tostring(rate), 'configured_rpm', tostring(configured),
           'last_decrease_ms', tostring(last_decrease), 'throttles_total', tostring(throttles))
redis.call('PEXPIRE', KEYS[1], __KEY_TTL_MS__)
return tostring(rate)
""".replace("__KEY_TTL_MS__", str(_KEY_TTL_MS))
)

# KEYS: inflight. ARGV: cap, lease_ms, slot id. Expired leases (a dead worker's) are dropped.
_TAKE_SLOT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]) * 2, 60000))
return 1
"""


@dataclass(frozen=True)
class Reservation:
    """A token: ``granted`` with ``wait_s`` to sleep before calling, or refused because the wait
    (``wait_s``) is longer than allowed."""

    granted: bool
    wait_s: float
    rate_rpm: float


class LimiterWaitTooLongError(Exception):
    """The quota has no room soon enough; come back after ``delay_s``."""

    def __init__(self, model_id: str, delay_s: float) -> None:
        super().__init__(f"{model_id}: no quota for {delay_s:.1f} s")
        self.delay_s = delay_s


class Limiter:
    """The fleet-wide limiter for every model, keyed by region and model id."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._reserve = redis.register_script(_RESERVE_LUA)
        self._report = redis.register_script(_REPORT_LUA)
        self._take_slot = redis.register_script(_TAKE_SLOT_LUA)

    def _keys(self, model_id: str) -> keys.LimiterKeys:
        return keys.limiter_keys(self._settings.aws_region, model_id)

    def enabled(self, model_id: str) -> bool:
        return self._settings.limit_for(model_id).rpm > 0

    def reserve(self, model_id: str, max_wait_s: float, now_ms: float | None = None) -> Reservation:
        """Take one token, due in ``wait_s``; ``now_ms`` replaces the server clock in tests."""
        limit = self._settings.limit_for(model_id)
        bucket = self._keys(model_id)
        granted, wait_ms, _tokens, rate = self._reserve(
            keys=[bucket.bucket, bucket.calls],
            args=[
                limit.rpm,
                limit.burst,
                limit.rpm * self._settings.rate_floor_fraction,
                max_wait_s * 1000,
                uuid.uuid4().hex,
                "" if now_ms is None else now_ms,
            ],
        )
        return Reservation(bool(int(granted)), float(wait_ms) / 1000, float(rate))

    def report(self, model_id: str, *, throttled: bool, now_ms: float | None = None) -> float:
        """Tell the shared rate how a call went; returns the new effective rate (per minute)."""
        settings = self._settings
        limit = settings.limit_for(model_id)
        bucket = self._keys(model_id)
        rate = self._report(
            keys=[bucket.bucket, bucket.throttles],
            args=[
                limit.rpm,
                limit.burst,
                limit.rpm * settings.rate_floor_fraction,
                "throttled" if throttled else "ok",
                limit.rpm * settings.rate_increase_fraction,
                settings.rate_decrease_factor,
                settings.rate_decrease_cooldown_s * 1000,
                uuid.uuid4().hex,
                "" if now_ms is None else now_ms,
            ],
        )
        return float(rate)

    def wait_for_token(self, model_id: str) -> float:
        """Block until a token is due (sleeping, not polling); returns the seconds waited.

        Raises ``LimiterWaitTooLongError`` when the wait would exceed ``limiter_max_wait_s``."""
        if not self.enabled(model_id):
            return 0.0
        reservation = self.reserve(model_id, self._settings.limiter_max_wait_s)
        if not reservation.granted:
            raise LimiterWaitTooLongError(model_id, reservation.wait_s)
        if reservation.wait_s > 0:
            time.sleep(reservation.wait_s)
        return reservation.wait_s

    @contextmanager
    def concurrency_slot(self, model_id: str, lease_s: float) -> Iterator[None]:
        """Hold one of the model's ``max_concurrency`` slots (no-op without a cap). The lease
        ends by itself after ``lease_s``, so a worker that dies never keeps a slot."""
        cap = self._settings.limit_for(model_id).max_concurrency
        if cap <= 0:
            yield
            return
        inflight = self._keys(model_id).inflight
        slot = uuid.uuid4().hex
        deadline = time.monotonic() + self._settings.limiter_max_wait_s
        pause_s = _SLOT_POLL_FIRST_S
        while not self._take_slot(keys=[inflight], args=[cap, round(lease_s * 1000), slot]):
            if time.monotonic() + pause_s > deadline:
                raise LimiterWaitTooLongError(model_id, self._settings.limiter_max_wait_s)
            time.sleep(pause_s * random.uniform(0.5, 1.5))
            pause_s = min(pause_s * 2, _SLOT_POLL_MAX_S)
        try:
            yield
        finally:
            self._redis.zrem(inflight, slot)

    def status(self, model_id: str) -> QuotaStatus:
        return read_quota(self._redis, self._settings, model_id)
