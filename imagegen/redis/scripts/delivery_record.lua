-- Records one delivery attempt and what follows from it.
-- KEYS: delivery hash. ARGV: delivery id, outcome (delivered | retry | exhausted | refused |
-- disabled), attempt-log line, retry delay ms. Returns 1.
local now = now_ms()
local log = redis.call('HGET', KEYS[1], 'log') or ''
redis.call('HSET', KEYS[1], 'log', log .. ARGV[3] .. '\n', 'lease_until_ms', 0)
local outcome = ARGV[2]
redis.call('HINCRBY', K.STATS, 'webhooks|' .. outcome, 1)
if outcome == 'retry' then
  local due = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', due)
  redis.call('ZADD', K.WEBHOOKS_DUE, due, ARGV[1])
  return 1
end
redis.call('ZREM', K.WEBHOOKS_DUE, ARGV[1])
redis.call('HSET', KEYS[1], 'state', outcome)
if outcome == 'delivered' then
  redis.call('HSET', KEYS[1], 'delivered_ms', now)
elseif outcome == 'disabled' then
  redis.call('ZADD', K.WEBHOOKS_DISABLED, now, redis.call('HGET', KEYS[1], 'url'))
else
  redis.call('ZADD', K.WEBHOOKS_DLQ, now, ARGV[1])
end
return 1
