-- Takes one token of a quota now, even from an empty bucket (it goes negative), and says how
-- long to wait until that token is due; nothing is taken when the wait exceeds max_wait_ms.
-- KEYS: bucket, calls. ARGV: configured_rpm, burst, floor_rpm, max_wait_ms, call id,
-- now ('' = server clock), key ttl ms.
-- Returns {granted 0|1, wait_ms, tokens, rate_rpm} (numbers as strings).
local configured, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = clock(ARGV[6])
local ttl = tonumber(ARGV[7])
local tokens, rate, state = load_bucket(KEYS[1], configured, burst, tonumber(ARGV[3]), now)
local wait_ms = 0
if tokens < 1 then wait_ms = (1 - tokens) * 60000 / rate end
local granted = 0
if wait_ms <= tonumber(ARGV[4]) then
  granted = 1
  tokens = tokens - 1
  redis.call('ZADD', KEYS[2], now + wait_ms, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(state.updated),
           'rate_rpm', tostring(rate), 'configured_rpm', tostring(configured))
redis.call('PEXPIRE', KEYS[1], ttl)
return {granted, tostring(wait_ms), tostring(tokens), tostring(rate)}
