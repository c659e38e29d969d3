-- Tells a quota how a call went (AIMD): a throttle multiplies the rate by decrease_factor (once
-- per cooldown) and empties the bucket; a success adds increase_rpm back, up to the quota.
-- A pool's bucket also holds its circuit: `denied` (access denied, no subscription, no such
-- model in its Region) opens it for open_ms (the dispatcher then sends it nothing until one
-- probe); so does a run of `failures_to_open` failures in a row (5xx, timeouts: `failed`); any
-- other answer (a success, a throttle) closes it.
-- KEYS: bucket, throttles. ARGV: 1 now, 2 configured_rpm, 3 burst, 4 floor_rpm, 5 outcome
-- ok|throttled|denied|failed, 6 increase_rpm, 7 decrease_factor, 8 cooldown_ms, 9 event id, 10
-- key ttl ms, 11 open_ms, 12 the error's code (denied, failed), 13 failures_to_open (failed).
-- Returns the new rate (string).
local configured, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local ttl = tonumber(ARGV[10])
local tokens, rate, state = load_bucket(KEYS[1], configured, burst, floor, NOW)
local last_decrease, throttles = state.last_decrease, state.throttles_total
if ARGV[5] == 'throttled' then
  throttles = throttles + 1
  redis.call('ZADD', KEYS[2], NOW, ARGV[9])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', NOW - 60000)
  redis.call('PEXPIRE', KEYS[2], ttl)
  if NOW - last_decrease >= tonumber(ARGV[8]) then
    rate = math.max(floor, rate * tonumber(ARGV[7]))
    last_decrease = NOW
    tokens = math.min(tokens, 0)
  end
elseif ARGV[5] == 'ok' then
  rate = math.min(configured, rate + tonumber(ARGV[6]))
end
local opens = ARGV[5] == 'denied'
if ARGV[5] == 'failed' then
  local in_row = redis.call('HINCRBY', KEYS[1], 'failures_in_row', '1')
  opens = in_row >= (tonumber(ARGV[13] or '') or math.huge)
else
  redis.call('HDEL', KEYS[1], 'failures_in_row')
end
if opens then
  redis.call('HSET', KEYS[1], 'circuit', 'open', 'circuit_until_ms', NOW + tonumber(ARGV[11]),
             'circuit_reason', ARGV[12], 'circuit_opened_ms', NOW, 'failures_in_row', '0')
  redis.call('HINCRBY', KEYS[1], 'circuit_opens', '1')
elseif ARGV[5] ~= 'failed' then
  redis.call('HDEL', KEYS[1], 'circuit', 'circuit_until_ms', 'circuit_reason', 'circuit_opened_ms')
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', bucket_ms(state.updated),
           'rate_rpm', tostring(rate), 'configured_rpm', tostring(configured),
           'last_decrease_ms', tostring(last_decrease), 'throttles_total', tostring(throttles))
redis.call('PEXPIRE', KEYS[1], ttl)
return tostring(rate)
