-- Reads one quota without changing it.
-- KEYS: bucket, calls, throttles. ARGV: configured_rpm, burst, floor_rpm.
-- Returns {tokens, rate_rpm, calls in the last minute, throttles in the last minute,
-- throttles in all} (numbers as strings where fractional).
local configured = tonumber(ARGV[1])
local now = clock(nil)
local tokens, rate, state = load_bucket(KEYS[1], configured, tonumber(ARGV[2]),
                                        tonumber(ARGV[3]), now)
local since = now - 60000
return {tostring(tokens), tostring(rate), redis.call('ZCOUNT', KEYS[2], since, now),
        redis.call('ZCOUNT', KEYS[3], since, now), tostring(state.throttles_total)}
