-- Gives a claimed delivery back without counting the attempt (its endpoint had no free slot):
-- pending again, due after the delay.
-- KEYS: delivery hash. ARGV: delivery id, delay ms. Returns 1, or 0 when it was not sending.
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
local due = now_ms() + tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'lease_until_ms', 0, 'next_ms', due)
redis.call('ZADD', K.WEBHOOKS_DUE, due, ARGV[1])
return 1
