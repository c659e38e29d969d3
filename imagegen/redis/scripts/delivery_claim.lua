-- Takes a webhook delivery for one attempt: a lease, so it is never sent twice at once.
-- KEYS: delivery hash. ARGV: 1 now, 2 delivery id, 3 lease ms.
-- Touches: the outbox (K.WEBHOOKS_DUE) and the disabled endpoints.
-- Returns {state, attempts}: claimed | missing | final | busy | disabled.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', 0} end
if state ~= 'pending' and state ~= 'sending' then return {'final', 0} end
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if state == 'sending' and lease_until > NOW_MS then return {'busy', 0} end
local url = redis.call('HGET', KEYS[1], 'url')
if redis.call('ZSCORE', K.WEBHOOKS_DISABLED, url) then
  redis.call('HSET', KEYS[1], 'state', 'disabled')
  redis.call('ZREM', K.WEBHOOKS_DUE, ARGV[2])
  return {'disabled', 0}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_until_ms', NOW_MS + tonumber(ARGV[3]))
redis.call('ZADD', K.WEBHOOKS_DUE, NOW_MS + tonumber(ARGV[3]), ARGV[2])
return {'claimed', attempts}
