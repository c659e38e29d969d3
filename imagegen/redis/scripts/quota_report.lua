-- Tells a quota how a call went (AIMD): a throttle multiplies the rate by decrease_factor (once
-- per cooldown) and empties the bucket; a success adds increase_rpm back, up to the quota.
-- KEYS: bucket, throttles. ARGV: configured_rpm, burst, floor_rpm, outcome ok|throttled,
-- increase_rpm, decrease_factor, cooldown_ms, event id, now ('' = server clock), key ttl ms.
-- Returns the new rate (string).
local configured, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local now = clock(ARGV[9])
local ttl = tonumber(ARGV[10])
local tokens, rate, state = load_bucket(KEYS[1], configured, burst, floor, now)
local last_decrease, throttles = state.last_decrease, state.throttles_total
if ARGV[4] == 'throttled' then
  throttles = throttles + 1
  redis.call('ZADD', KEYS[2], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  redis.call('PEXPIRE', KEYS[2], ttl)
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
redis.call('PEXPIRE', KEYS[1], ttl)
return tostring(rate)
