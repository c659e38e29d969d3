-- Reads one quota without changing it.
-- KEYS: bucket, calls, throttles. ARGV: 1 now, 2 configured_rpm, 3 burst, 4 floor_rpm.
-- Reads: only its KEYS.
-- Returns {tokens, rate_rpm, calls in the last minute, throttles in the last minute,
-- throttles in all} (numbers as strings where fractional).
local configured = tonumber(ARGV[2])
local now = NOW
local tokens, rate, state = load_bucket(KEYS[1], configured, tonumber(ARGV[3]),
                                        tonumber(ARGV[4]), now)
local since = now - 60000
return {tostring(tokens), tostring(rate), redis.call('ZCOUNT', KEYS[2], since, now),
        redis.call('ZCOUNT', KEYS[3], since, now), tostring(state.throttles_total)}
