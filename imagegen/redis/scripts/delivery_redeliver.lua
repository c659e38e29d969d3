-- Sends a delivery again: back to pending and due now, out of the dead-letter set, its endpoint
-- enabled again.
-- KEYS: delivery hash. ARGV: 1 now, 2 delivery id. Touches: the outbox, the webhook dead-letter
-- set, the disabled endpoints.
-- Returns 1, or 0 when the delivery no longer exists.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local url = redis.call('HGET', KEYS[1], 'url')
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', NOW_MS, 'lease_until_ms', '0')
redis.call('ZADD', K.WEBHOOKS_DUE, NOW_MS, ARGV[2])
redis.call('ZREM', K.WEBHOOKS_DLQ, ARGV[2])
redis.call('ZREM', K.WEBHOOKS_DISABLED, url)
return 1
