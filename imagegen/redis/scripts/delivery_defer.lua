-- Gives a claimed delivery back without counting the attempt (its endpoint had no free slot):
-- pending again, due after the delay.
-- KEYS: delivery hash. ARGV: 1 now, 2 delivery id, 3 delay ms. Touches: the outbox.
-- Returns 1, or 0 when it was not sending.
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
local due = NOW_MS + tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attempts', '-1')
redis.call('HSET', KEYS[1], 'state', 'pending', 'lease_until_ms', '0', 'next_ms', due)
redis.call('ZADD', K.WEBHOOKS_DUE, due, ARGV[2])
return 1
