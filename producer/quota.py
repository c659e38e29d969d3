"""Reading the shared Bedrock quota: configured and effective rate, tokens, recent calls.

The worker's limiter (``worker.limiter``) writes this state; its Lua shares ``BUCKET_LUA`` with
the read-only peek here, so both compute the bucket the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from producer import keys
from producer.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["BUCKET_LUA", "QuotaStatus", "read_quota"]

MS_PER_MINUTE = 60_000

# Shared Lua: the clock (the server's, unless a test passes one) and the bucket as of `now`.
# load_bucket(key, configured_rpm, burst, floor_rpm, now) returns tokens, rate_rpm, state;
# the effective rate is reset to the configured one whenever the configuration changes.
BUCKET_LUA = """
local function clock(override)
  if override ~= nil and override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function load_bucket(key, configured, burst, floor, now)
  local h = redis.call('HMGET', key, 'tokens', 'updated_ms', 'rate_rpm', 'configured_rpm',
                       'last_decrease_ms', 'throttles_total')
  local rate = tonumber(h[3]) or configured
  if tonumber(h[4]) ~= configured then rate = configured end
  rate = math.max(floor, math.min(configured, rate))
  local tokens = tonumber(h[1]) or burst
  local updated = tonumber(h[2]) or now
  if now > updated then
    tokens = math.min(burst, tokens + (now - updated) * rate / 60000)
    updated = now
  end
  return tokens, rate, {updated = updated, last_decrease = tonumber(h[5]) or 0,
                        throttles_total = tonumber(h[6]) or 0}
end
"""

# KEYS: bucket, calls, throttles. ARGV: configured_rpm, burst, floor_rpm.
_PEEK_LUA = (
    BUCKET_LUA
    + """
local configured = tonumber(ARGV[1])
local now = clock(nil)
local tokens, rate, state = load_bucket(KEYS[1], configured, tonumber(ARGV[2]),
                                        tonumber(ARGV[3]), now)
local since = now - 60000
return {tostring(tokens), tostring(rate), redis.call('ZCOUNT', KEYS[2], since, now),
        redis.call('ZCOUNT', KEYS[3], since, now), tostring(state.throttles_total)}
"""
)


@dataclass(frozen=True)
class QuotaStatus:
    model_id: str
    configured_rpm: float
    effective_rpm: float
    tokens: float
    calls_last_minute: int
    throttles_last_minute: int
    throttles_total: int


def read_quota(redis: Redis, settings: Settings, model_id: str) -> QuotaStatus:
    """The quota of ``model_id`` as every worker sees it now (Redis server clock)."""
    limit = settings.limit_for(model_id)
    bucket = keys.limiter_keys(settings.aws_region, model_id)
    tokens, rate, calls, throttles, total = redis.register_script(_PEEK_LUA)(
        keys=[bucket.bucket, bucket.calls, bucket.throttles],
        args=[limit.rpm, limit.burst, limit.rpm * settings.rate_floor_fraction],
    )
    return QuotaStatus(
        model_id=model_id,
        configured_rpm=limit.rpm,
        effective_rpm=float(rate),
        tokens=float(tokens),
        calls_last_minute=int(calls),
        throttles_last_minute=int(throttles),
        throttles_total=int(float(total)),
    )
